#!/usr/bin/env bash
# Starts the services Berth's tests and demo talk to, on loopback only, without systemd:
#   RabbitMQ  rabbit://guest:guest@127.0.0.1:5672/   (node rabbit@localhost)
#   libvirtd  qemu:///system                        (QEMU/TCG; KVM is not usable here)
# Idempotent: a service that already answers is left alone. Run scripts/install-deps.sh first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

RABBIT_NODE=rabbit@localhost
RABBIT_LOG=${BERTH_RABBITMQ_LOG:-/tmp/berth-rabbitmq.log}
RABBIT_TIMEOUT=${BERTH_RABBITMQ_TIMEOUT:-90}
LIBVIRT_URI=qemu:///system
LIBVIRT_TIMEOUT=${BERTH_LIBVIRT_TIMEOUT:-60}

if [[ $(id -u) -ne 0 ]]; then
    echo "start-services: must run as root (rabbitmq-server and libvirtd are system daemons)" >&2
    exit 1
fi

# Erlang's port mapper (started by the first rabbitmqctl or by the broker) listens on loopback only.
export ERL_EPMD_ADDRESS=127.0.0.1
# The daemons started here are not the caller's service, so they must not report to its service manager.
# A systemd-nspawn container (NOTIFY_SOCKET=/run/host/notify) or a Type=notify unit running this script
# sets it; RabbitMQ's systemd support then fails to open that socket and the node dies at boot
# ("failed_to_start_child,systemd ... systemd_sup,notify_socket").
unset NOTIFY_SOCKET

log() { echo "start-services: $*"; }
die() { echo "start-services: ERROR: $*" >&2; exit 1; }

# --- name resolution ---------------------------------------------------------------------------
# Erlang distribution needs the node's host part to resolve. The node is rabbit@localhost, so
# only "localhost" must resolve; a missing entry for `hostname` is reported but not fatal.
if ! getent hosts localhost >/dev/null; then
    log "localhost does not resolve; adding it to /etc/hosts"
    echo "127.0.0.1 localhost" >>/etc/hosts
fi
if ! getent hosts "$(hostname)" >/dev/null; then
    log "note: host name '$(hostname)' does not resolve; fine, RabbitMQ runs as $RABBIT_NODE"
fi

# --- RabbitMQ ----------------------------------------------------------------------------------
rabbit_up() { timeout 20 rabbitmqctl -n "$RABBIT_NODE" -q status >/dev/null 2>&1; }

if rabbit_up; then
    log "RabbitMQ $RABBIT_NODE already running"
else
    log "starting RabbitMQ $RABBIT_NODE on 127.0.0.1:5672 (log: $RABBIT_LOG, node logs in /var/log/rabbitmq)"
    mkdir -p /var/log/rabbitmq /var/lib/rabbitmq
    chown rabbitmq:rabbitmq /var/log/rabbitmq /var/lib/rabbitmq 2>/dev/null || true
    # epmd and the Erlang distribution listener on loopback too; the management plugin is not
    # enabled, so 5672 (AMQP) is the only other port.
    # setsid: the broker must outlive this script and not get the caller's Ctrl-C.
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=5672 \
    RABBITMQ_NODENAME=$RABBIT_NODE \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        setsid rabbitmq-server >"$RABBIT_LOG" 2>&1 </dev/null &
    rabbit_pid=$!
    deadline=$((SECONDS + RABBIT_TIMEOUT))
    until timeout 15 rabbitmqctl -n "$RABBIT_NODE" -q await_startup --timeout 10 >/dev/null 2>&1; do
        if ! kill -0 "$rabbit_pid" 2>/dev/null && ! pgrep -f "beam.*-sname $RABBIT_NODE" >/dev/null; then
            echo "--- tail of $RABBIT_LOG ---" >&2; tail -n 40 "$RABBIT_LOG" >&2 || true
            for f in /var/log/rabbitmq/"$RABBIT_NODE".log /var/log/rabbitmq/startup_err; do
                [[ -s $f ]] && { echo "--- tail of $f ---" >&2; tail -n 40 "$f" >&2; }
            done
            die "rabbitmq-server exited before it was ready"
        fi
        if ((SECONDS >= deadline)); then
            echo "--- tail of $RABBIT_LOG ---" >&2; tail -n 40 "$RABBIT_LOG" >&2 || true
            [[ -s /var/log/rabbitmq/$RABBIT_NODE.log ]] \
                && { echo "--- tail of /var/log/rabbitmq/$RABBIT_NODE.log ---" >&2; tail -n 40 "/var/log/rabbitmq/$RABBIT_NODE.log" >&2; }
            die "RabbitMQ not ready after ${RABBIT_TIMEOUT}s (rabbitmqctl -n $RABBIT_NODE await_startup kept failing)"
        fi
        sleep 2
    done
    log "RabbitMQ ready after $((SECONDS - deadline + RABBIT_TIMEOUT))s"
fi
# guest/guest is RabbitMQ's default user and is allowed from loopback only (loopback_users
# default); the tests use amqp://guest:guest@127.0.0.1:5672/. Make sure it exists.
users=$(rabbitmqctl -n "$RABBIT_NODE" -q list_users 2>/dev/null || true)
if ! grep -q '^guest\b' <<<"$users"; then
    log "creating the guest user (loopback-only by RabbitMQ's default)"
    rabbitmqctl -n "$RABBIT_NODE" add_user guest guest
    rabbitmqctl -n "$RABBIT_NODE" set_user_tags guest administrator
    rabbitmqctl -n "$RABBIT_NODE" set_permissions -p / guest '.*' '.*' '.*'
fi

# --- libvirtd ----------------------------------------------------------------------------------
mkdir -p /var/run/libvirt /var/log/libvirt /var/lib/libvirt/qemu /var/cache/libvirt/qemu
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || true
if ! getent passwd libvirt-qemu >/dev/null; then
    log "creating the libvirt-qemu user"
    useradd --system --gid kvm --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
        --comment "Libvirt Qemu" libvirt-qemu
fi

QEMU_CONF=/etc/libvirt/qemu.conf
[[ -f $QEMU_CONF ]] || die "$QEMU_CONF missing: is libvirt-daemon-system installed? (run scripts/install-deps.sh)"
# set_qemu_conf KEY VALUE: replace an active `KEY = ...` line, or append one. Commented defaults
# are left as they are.
set_qemu_conf() {
    local key=$1 value=$2
    if grep -Eq "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*${value}[[:space:]]*\$" "$QEMU_CONF"; then
        return 0
    fi
    libvirt_conf_changed=1
    if grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF"; then
        sed -i -E "s|^[[:space:]]*${key}[[:space:]]*=.*\$|${key} = ${value}|" "$QEMU_CONF"
    else
        echo "${key} = ${value}" >>"$QEMU_CONF"
    fi
}
libvirt_conf_changed=0
set_qemu_conf user '"root"'
set_qemu_conf group '"root"'
set_qemu_conf security_driver '"none"'

if ! pgrep -x virtlogd >/dev/null; then
    log "starting virtlogd"
    virtlogd -d
fi
if pgrep -x libvirtd >/dev/null && ((libvirt_conf_changed)); then
    die "libvirtd is running with an old $QEMU_CONF (user/group/security_driver just changed); stop it (kill its pid) and rerun"
fi
if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd"
    libvirtd -d
fi
deadline=$((SECONDS + LIBVIRT_TIMEOUT))
until virsh -c "$LIBVIRT_URI" version >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        virsh -c "$LIBVIRT_URI" version >&2 || true
        [[ -s /var/log/libvirt/libvirtd.log ]] && tail -n 40 /var/log/libvirt/libvirtd.log >&2
        die "libvirtd not answering on $LIBVIRT_URI after ${LIBVIRT_TIMEOUT}s"
    fi
    sleep 1
done
log "libvirtd ready: $(virsh -c "$LIBVIRT_URI" version 2>/dev/null | grep -i 'running hypervisor' || echo "$LIBVIRT_URI")"
log "services up: rabbit://guest:guest@127.0.0.1:5672/ and $LIBVIRT_URI"
