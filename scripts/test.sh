#!/usr/bin/env bash
# Runs Switchboard's whole test suite on a Debian machine with Rust.
#
# The tests talk to real peers: PostgreSQL (as well as SQLite) and, for SIP, SIPp, baresip and
# PJSIP (pjsua2, the PyPI wheel pjsua2-python, installed into a virtualenv under target/pyenv)
# and the kernel (nftables, for media forwarding; those tests need root);
# dnsmasq answers DNS for the trunks.
# This script makes sure they are there — installing Debian packages that are missing and
# starting PostgreSQL when nothing answers on 127.0.0.1:5432 — then runs cargo test.
# Set SWITCHBOARD_TEST_POSTGRES to use another server (default
# postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages the tests need, by the command that proves each is installed.
need=()
command -v psql >/dev/null 2>&1 || need+=(postgresql postgresql-client)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip)
# dnsmasq serves the SRV records of the trunk DNS test.
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# Kernel forwarding of media (tests/media_kernel.rs, run as root in namespaces of their own).
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL: the configured server if it answers; else start the local cluster; else a
# throwaway cluster of our own (trust auth, port 55432) under target/.
export SWITCHBOARD_TEST_POSTGRES="${SWITCHBOARD_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
pg_ok() { psql "$SWITCHBOARD_TEST_POSTGRES" -qAtc 'select 1' >/dev/null 2>&1; }
if ! pg_ok && ! pg_isready -q -h 127.0.0.1 -p 5432 \
   && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! pg_ok; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pgdata="$PWD/target/pg-test"
  run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    mkdir -p "$pgdata"
    [ "$(id -u)" = 0 ] && chown postgres "$pgdata"
    run_pg "$bindir/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
  fi
  run_pg "$bindir/pg_ctl" -D "$pgdata" -o "-p 55432 -k /tmp -c listen_addresses=127.0.0.1" \
    -l "$pgdata/log" -w start >/dev/null || true
  psql "postgres://postgres@127.0.0.1:55432/postgres" -qc 'CREATE DATABASE test' >/dev/null 2>&1 || true
  export SWITCHBOARD_TEST_POSTGRES="postgres://postgres@127.0.0.1:55432/test"
fi
if ! pg_ok; then
  echo "PostgreSQL is not reachable at $SWITCHBOARD_TEST_POSTGRES; the store tests need it" >&2
  exit 1
fi

# PJSIP for the SHA-256 digest interop test (no Debian package has it).
PJSUA_WHEEL="pjsua2-python==2.15.1.post1"
export SWITCHBOARD_TEST_PYTHON="${SWITCHBOARD_TEST_PYTHON:-$PWD/target/pyenv/bin/python}"
if ! "$SWITCHBOARD_TEST_PYTHON" -c 'import pjsua2' >/dev/null 2>&1; then
  echo "installing $PJSUA_WHEEL into target/pyenv"
  python3 -m venv target/pyenv
  target/pyenv/bin/pip install -q "$PJSUA_WHEEL"
fi

cargo test --all-targets
