#!/usr/bin/env bash
# Installs what amoskys-pipeline needs on Debian/Ubuntu, and nothing that is there.
#   scripts/setup.sh          build and run: a C toolchain, libpcap's headers,
#                             and the DuckDB command-line tool (.venv/bin/duckdb,
#                             PyPI's duckdb-cli) to read the output
#   scripts/setup.sh --test   also the test tools: tshark/capinfos, net-snmp's
#                             snmpd and snmpget, mosquitto and its clients, curl,
#                             inetutils' telnetd and socat to start it on
#                             loopback (no inetd service is enabled), ping,
#                             and a Python venv (.venv) with DuckDB, pyarrow and
#                             snmpsim (the tests start and stop every server
#                             themselves, on free loopback ports)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ ${1:-} == --test ]] && want_test=1

packages=(gcc libc6-dev pkg-config libpcap-dev python3 python3-venv)
(( want_test )) && packages+=(tshark bsdutils snmpd snmp mosquitto mosquitto-clients curl openssl iputils-ping inetutils-telnetd socat)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  sudo=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  # tshark asks whether non-root users may capture; the default (no) is right here.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/duckdb ]]; then
  echo "installing the DuckDB command-line tool into .venv" >&2
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "$(grep '^duckdb-cli==' tests/requirements.txt)"
fi
if (( want_test )); then
  if ! .venv/bin/python -c "import duckdb, pyarrow, pytest, snmpsim, adbc_driver_flightsql" 2>/dev/null; then
    echo "installing the test requirements into .venv" >&2
    .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  fi
fi
