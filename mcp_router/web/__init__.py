"""The web front: the HTTP app (`http_app.py`: /mcp, /health, /metrics behind auth, Host/Origin
checks and rate limits) and the REST API for application backends (`rest/`, FastAPI). It uses
the gateway; it never starts processes or opens stores itself.
"""
