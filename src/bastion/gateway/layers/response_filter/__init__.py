"""The response_filter layer: schema allow-list and sensitive-data masking of JSON responses.

``config.py`` (what the route asks for), ``plan.py`` (a response schema as an allow-list plan,
and the fast-path schema), ``walk.py`` (one body filtered), ``layer.py`` (the hooks).
"""
