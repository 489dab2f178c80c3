# pgrest: gunicorn serving the Connexion app with uvicorn-worker (uvicorn_worker.UvicornWorker,
# chosen in gunicorn.conf.py), each worker with its own connection pool.
# Configuration comes from the environment: DATABASE_URL, POOL_MAX_SIZE, SERVER_WORKERS, ...
# (config.ini.example lists every key; SECTION_KEY is its variable). DATABASE_URL (or
# POSTGRES_URL) is required: the image has no embedded PostgreSQL, and without a database it
# exits at once with one line saying so.
#
# Workers: set SERVER_WORKERS to the CPUs the container gets (e.g. `--cpus 2` -> 2); unset, it is
# the number of CPUs the process may run on. Each worker runs 10 request threads and holds up to
# POOL_MAX_SIZE connections (default 10): SERVER_WORKERS x POOL_MAX_SIZE x replicas (x 2 during
# a rolling update) must fit the database's max_connections (README "Sizing").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# An unprivileged user runs the service; it may write nothing in the image.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --create-home --home-dir /home/app app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock changes. The lock pins every
# package with its hashes (made by scripts/lock from requirements.in); pip refuses anything else.
COPY requirements.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements.txt

# The application (owned by root, read-only for the service user).
COPY gunicorn.conf.py wsgi.py ./
COPY swagger/ ./swagger/
COPY swagger_server/ ./swagger_server/

ENV SERVER_BIND=0.0.0.0:8000 \
    SERVER_LOG_LEVEL=info

USER 10001:10001

EXPOSE 8000

# Liveness only (never touches the database); slim images have no curl. Follows SERVER_BIND.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SERVER_BIND', '0.0.0.0:8000').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4)"]

CMD ["gunicorn", "wsgi:application"]
