"""pgrest: a spec-first REST service that reads PostgreSQL and serves JSON."""

import warnings

# Connexion imports starlette.testclient at import time, which warns about httpx in every
# process (gunicorn master and workers alike). Nothing here uses that client in production.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
