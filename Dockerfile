# pgrest: gunicorn (native ASGI workers) serving the Connexion app.
# Configuration comes from the environment: DATABASE_URL, POOL_MAX_SIZE, SERVER_WORKERS, ...
# (config.ini.example lists every key; SECTION_KEY is its variable). Without DATABASE_URL or
# POSTGRES_URL the image starts its embedded PostgreSQL in EMBEDDED_DATA_DIR (demo use only).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# An unprivileged user runs the service; it may write only the embedded server's data folder.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /data/pgdata \
    && chown -R app:app /data \
    && chmod 0700 /data/pgdata

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The application (owned by root, read-only for the service user).
COPY gunicorn.conf.py wsgi.py ./
COPY swagger/ ./swagger/
COPY swagger_server/ ./swagger_server/

ENV SERVER_BIND=0.0.0.0:8000 \
    SERVER_LOG_LEVEL=info \
    EMBEDDED_DATA_DIR=/data/pgdata

USER 10001:10001

EXPOSE 8000

# Liveness only (never touches the database); slim images have no curl. Follows SERVER_BIND.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SERVER_BIND', '0.0.0.0:8000').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4)"]

CMD ["gunicorn", "wsgi:application"]
