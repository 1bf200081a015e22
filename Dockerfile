# The mvm_chat service: `docker build -t mvm-chat .` (compose.yaml builds it as mvm-chat:local).
# Two stages: wheels are built with a compiler (llama-cpp-python compiles llama.cpp), and the
# runtime image installs them without one.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# Portable CPU code: without this llama.cpp builds for the build machine's CPU only
# (-march=native) and may crash with "illegal instruction" elsewhere.
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV CMAKE_ARGS=${CMAKE_ARGS}

# The slow wheel first, in its own layer, so that a change to the code does not rebuild it.
RUN pip wheel --wheel-dir /wheels "llama-cpp-python>=0.3.2"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mvm_chat ./mvm_chat
RUN pip wheel --wheel-dir /wheels --find-links /wheels .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# llama.cpp is built with OpenMP: its runtime library.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels mvm-chat

# The Alembic migrations are not part of the package: mvm_chat.store.db looks for them at
# MIGRATIONS_DIR, a `migrations` folder beside the installed package directory (in
# site-packages). Link them there and check that the newest revision is found, so that a wrong
# layout fails the build rather than `mvm-chat db upgrade`.
COPY migrations /opt/mvm_chat/migrations
RUN ln -s /opt/mvm_chat/migrations \
        "$(python -c 'from mvm_chat.store.db import MIGRATIONS_DIR; print(MIGRATIONS_DIR)')" \
    && python -c 'from mvm_chat.store.db import head_revision; print("migrations head:", head_revision())'

# An unprivileged user; /app/var holds the embedded SQLite database when no
# MVM_CHAT_DATABASE_URL is given.
RUN useradd --create-home --uid 10001 mvm && mkdir -p /app/var && chown mvm:mvm /app/var
WORKDIR /app
USER mvm

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["mvm-chat", "serve", "--host", "0.0.0.0"]
