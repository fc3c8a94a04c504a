"""The local web app and REST API (FastAPI), its upload reader and the server guard below it."""
