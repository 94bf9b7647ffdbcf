#!/usr/bin/env bash
# The whole test suite, install included:
#   1. system peers the tests talk to (dicom3tools' dciodvfy; DCMTK; Orthanc as the PACS;
#      PostgreSQL server binaries; strace, which counts the database's fsyncs; systemd for
#      `systemd-analyze verify` of deploy/systemd, which needs no running systemd; chromium
#      and its driver for the status page test) via
#      apt, when root (Orthanc is installed, not started: the tests start their own);
#   2. ctnode with its test extras into ./.venv (deploy/install.sh);
#   3. lint (ruff) and pytest. Extra arguments go to pytest, e.g. `bash tests/run.sh -k agatston`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dciodvfy >/dev/null || missing+=(dicom3tools)
command -v dcmdump >/dev/null || missing+=(dcmtk)
command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v strace >/dev/null || missing+=(strace)  # tests/integration/test_durability.py
command -v systemd-analyze >/dev/null || missing+=(systemd)
# the status page test drives a headless browser (tests/integration/test_http_status.py)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v openssl >/dev/null || missing+=(openssl)  # tests/integration/test_tls_dcmtk.py
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "not root: cannot install ${missing[*]}; tests that need them will be skipped" >&2
    fi
fi

bash deploy/install.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
