// node oidc-provider for bench/authserver.py: in-memory adapter (the default), ES256 JWT access
// tokens for client_credentials (resource indicators), client_secret_basic, introspection on.
// The client "bench" gets JWT access tokens; "bench-opaque" gets opaque ones, for the
// introspection run (oidc-provider introspects opaque tokens only).
//
//   PORT=9200 CLIENT_SECRET=... node server.mjs
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 9200);
const secret = process.env.CLIENT_SECRET;
if (!secret) throw new Error('CLIENT_SECRET is required');
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = 'https://api.example';

// A fresh signing key per run, never written anywhere.
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };

const client = (id) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'ES256', // the only key is ES256
  scope: 'read',
});

const provider = new Provider(issuer, {
  clients: [client('bench'), client('bench-opaque')],
  jwks: { keys: [jwk] },
  scopes: ['read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator, c) => ({
        scope: 'read',
        audience: resourceIndicator,
        accessTokenTTL: 300,
        accessTokenFormat: c.clientId === 'bench-opaque' ? 'opaque' : 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`oidc-provider listening on ${issuer}\n`);
});
