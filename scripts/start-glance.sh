#!/usr/bin/env bash
# Starts a real Glance (PyPI `glance`, pinned in scripts/requirements-glance.txt) on loopback for
# Tests/interop/test_glance.py and for trying `--catalog glance:URL` by hand:
#   http://127.0.0.1:${BERTH_GLANCE_PORT:-9292}/  sqlite database, file store, no Keystone
# State (config, database, image files, token, logs incl. access.log, pid) lives in ${BERTH_GLANCE_DIR:-/var/tmp/berth-glance}.
# Auth: a static token (in $DIR/token, made on first start) checked by scripts/glance/berth_glance_token.py in
# front of Glance's `unauthenticated-context` pipeline, standing in for Keystone's authtoken.
# Idempotent: a Glance that already answers on the port is left alone.
#   scripts/start-glance.sh          install (once) and start; prints the URL
#   scripts/start-glance.sh stop     stop the Glance this script started
#   scripts/start-glance.sh reset    stop, wipe its state, start afresh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PORT=${BERTH_GLANCE_PORT:-9292}
DIR=${BERTH_GLANCE_DIR:-/var/tmp/berth-glance}
VENV=$ROOT/.venv-glance
REQUIREMENTS=$ROOT/scripts/requirements-glance.txt
TIMEOUT=${BERTH_GLANCE_TIMEOUT:-60}
URL=http://127.0.0.1:$PORT

log() { echo "start-glance: $*"; }
die() { echo "start-glance: ERROR: $*" >&2; exit 1; }

# Any Python 3 will do for the probe (curl is not among the installed packages).
answers() {
    /usr/bin/env python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$URL/versions" >/dev/null 2>&1
}

stop() {
    if [[ -f $DIR/gunicorn.pid ]]; then
        local pid
        pid=$(cat "$DIR/gunicorn.pid")
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping Glance (gunicorn pid $pid)"
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$DIR/gunicorn.pid"
    fi
}

case ${1:-start} in
    stop) stop; exit 0 ;;
    reset) stop; rm -rf "$DIR" ;;
    start) ;;
    *) die "usage: $0 [start|stop|reset]" ;;
esac

if answers; then
    log "Glance already answers at $URL"
    exit 0
fi

# --- install (own venv: Glance's dependency set must not disturb .venv's oslo.messaging pin) ---------
PYTHON=${BERTH_PYTHON:-/usr/bin/python3}
[[ -x $PYTHON ]] || PYTHON=python3
STAMP=$VENV/.berth-requirements.stamp
want_stamp="$("$PYTHON" -c 'import sys; print(sys.version)' | head -n1) $(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ -x $VENV/bin/gunicorn && -f $STAMP && "$(cat "$STAMP")" == "$want_stamp" ]]; then
    :
else
    started=$SECONDS
    log "installing Glance into $VENV (pip, about 30-90 s)"
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
    echo "$want_stamp" >"$STAMP"
    log "installed in $((SECONDS - started)) s"
fi

# --- configuration -------------------------------------------------------------------------------
started=$SECONDS
mkdir -p "$DIR/images" "$DIR/staging" "$DIR/tasks" "$DIR/etc"
chmod 700 "$DIR"
if [[ ! -s $DIR/token ]]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/token")
fi
# Glance tests set a small size cap to see the 413; 64 MiB holds the test kernel, initramfs and snapshots.
SIZE_CAP=${BERTH_GLANCE_IMAGE_SIZE_CAP:-67108864}

cat >"$DIR/etc/glance-api.conf" <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $PORT
enabled_backends = fs:file
image_size_cap = $SIZE_CAP
# Glance default, named so the docs can rely on it: the os_hash_algo of every upload.
hashing_algorithm = sha512
show_image_direct_url = false
log_file = $DIR/glance-api.log
use_stderr = false

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $DIR/images

[os_glance_staging_store]
filesystem_store_datadir = $DIR/staging

[os_glance_tasks_store]
filesystem_store_datadir = $DIR/tasks

[database]
connection = sqlite:///$DIR/glance.sqlite

[paste_deploy]
# Empty flavor: the app glance-api of the paste file below, which has no Keystone in it.
flavor =
config_file = $DIR/etc/glance-api-paste.ini

[oslo_policy]
# Requests run with Glance's unauthenticated (admin) context, so the default rules allow them.
enforce_scope = false
enforce_new_defaults = false

[oslo_concurrency]
lock_path = $DIR/locks
CONF

cat >"$DIR/etc/glance-api-paste.ini" <<PASTE
[composite:glance-api]
paste.composite_factory = glance.api:root_app_factory
/: api
/healthcheck: healthcheck

[composite:api]
paste.composite_factory = glance.api:pipeline_factory
default = http_proxy_to_wsgi versionnegotiation berthtoken unauthenticated-context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[app:healthcheck]
paste.app_factory = oslo_middleware:Healthcheck.app_factory
backends = disable_by_file
disable_by_file_path = $DIR/healthcheck_disable

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory

[filter:berthtoken]
paste.filter_factory = berth_glance_token:filter_factory
token_file = $DIR/token

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory
PASTE

export OS_GLANCE_CONFIG_DIR=$DIR/etc
"$VENV/bin/glance-manage" --config-dir "$DIR/etc" db_sync >"$DIR/db_sync.log" 2>&1 \
    || { tail -n 30 "$DIR/db_sync.log" >&2; die "glance-manage db_sync failed (log: $DIR/db_sync.log)"; }

# --- start ---------------------------------------------------------------------------------------
stop
log "starting Glance at $URL (log: $DIR/glance-api.log, gunicorn: $DIR/gunicorn.log)"
# gthread: a download may stream while other requests are answered. setsid: outlives this script.
# shellcheck disable=SC2094 # gunicorn's error log and its own stderr append to one file; nothing reads it here
PYTHONPATH=$ROOT/scripts/glance setsid "$VENV/bin/gunicorn" --bind "127.0.0.1:$PORT" --workers 1 \
    --worker-class gthread --threads 8 --timeout 600 --pid "$DIR/gunicorn.pid" \
    --error-logfile "$DIR/gunicorn.log" --access-logfile "$DIR/access.log" glance.wsgi.api:application >>"$DIR/gunicorn.log" 2>&1 </dev/null &
pid=$!
deadline=$((SECONDS + TIMEOUT))
until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 40 "$DIR/gunicorn.log" "$DIR/glance-api.log" >&2 2>/dev/null || true
        die "Glance exited during start-up (logs above)"
    fi
    ((SECONDS < deadline)) || die "Glance did not answer at $URL within ${TIMEOUT}s (log: $DIR/gunicorn.log)"
    sleep 0.2
done
log "Glance answers at $URL after $((SECONDS - started)) s (token file: $DIR/token)"
