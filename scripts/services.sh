#!/usr/bin/env bash
# Starts local PostgreSQL and Redis for the tests when they are installed but not answering.
# Tests take MVM_CHAT_TEST_DATABASE_URL / MVM_CHAT_TEST_REDIS_URL instead when those are set.
set -uo pipefail
if [ -z "${MVM_CHAT_TEST_DATABASE_URL:-}" ] && command -v pg_ctlcluster >/dev/null; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  fi
fi
if [ -z "${MVM_CHAT_TEST_REDIS_URL:-}" ] && command -v redis-server >/dev/null; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    mkdir -p /tmp/mvm-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/mvm-redis --logfile /tmp/mvm-redis/redis.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
fi
exit 0
