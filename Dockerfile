# The mvm_chat service: `docker build -t mvm-chat .` (compose.yaml builds it as mvm-chat:local).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# llama-cpp-python compiles llama.cpp from source: a C/C++ toolchain and CMake.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# Portable CPU code: without this llama.cpp builds for the build machine's CPU only
# (-march=native) and may crash with "illegal instruction" elsewhere.
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV CMAKE_ARGS=${CMAKE_ARGS}

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mvm_chat ./mvm_chat
COPY migrations ./migrations
# Editable (-e), so that the Alembic migrations in /app/migrations, which mvm_chat finds next to
# its package directory, are found by `mvm-chat db upgrade` and `serve`.
RUN pip install -e .

# Run as an unprivileged user; ./var holds the embedded SQLite database when no
# MVM_CHAT_DATABASE_URL is given.
RUN useradd --create-home --uid 10001 mvm && mkdir -p /app/var && chown mvm:mvm /app/var
USER mvm

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["mvm-chat", "serve", "--host", "0.0.0.0"]
