#!/usr/bin/env bash
# A single-node Kubernetes for the end-to-end tests, from real components:
# etcd, kube-apiserver, a private containerd, the kubelet. By default no
# scheduler and no controller-manager: tests set spec.nodeName and create the
# ServiceAccounts they need. With --with-controllers (or E2E_WITH_CONTROLLERS=1)
# kube-scheduler and kube-controller-manager run too, so that DaemonSets,
# garbage collection and namespace deletion work as on any cluster (what a
# `helm install` of the chart needs).
#
#   scripts/e2e-cluster.sh up DIR [--with-controllers]   start everything under DIR, write DIR/env
#   scripts/e2e-cluster.sh down DIR   stop and remove what `up DIR` started
#   scripts/e2e-cluster.sh restart-kubelet DIR   restart the kubelet under running pods
#
# DIR/env holds KEY=value lines: KUBECONFIG, APISERVER, NODE_NAME, KUBELET_ROOT,
# CONTAINERD_ADDRESS, CNI_BRIDGE, PAUSE_IMAGE, APP_IMAGE and more (see write_env).
# Logs are in DIR/logs/, certificates in DIR/pki/, what `down` needs in
# DIR/records/.
#
# Everything listens on 127.0.0.1 on ports picked at start. State stays under
# DIR except what the kubelet and the CNI plugins insist on putting at fixed
# host paths (HOST_PATHS below): those are removed by `down` only when they did
# not exist before `up`. The kubelet also sets a few kernel sysctls at start;
# `down` puts back the values recorded before it ran.
#
# Run both commands in the same mount namespace (all mounts of the cluster live
# in the namespace `up` ran in); `down` re-enters that namespace itself when it
# is still alive and differs from the caller's.
#
# Environment: E2E_NODE_NAME (default localhost: the API server reaches the
# kubelet by the node's Hostname address, and the kubelet listens on 127.0.0.1
# only, so exec/logs/port-forward work only with a name that resolves to it),
# E2E_NODE_TIMEOUT (seconds to wait for the node to be Ready, default 120).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")"
K8S_VERSION="v1.35.4"
K8S_BIN="$ROOT/.tools/kubernetes/$K8S_VERSION"
KAPI="$ROOT/tests/e2e/cluster/kapi.py"
NODE_NAME="${E2E_NODE_NAME:-localhost}"
NODE_TIMEOUT="${E2E_NODE_TIMEOUT:-120}"
# Documentation ranges (RFC 5737): never routed, and the bridge gets no
# address, so the host has no route to the pods.
POD_CIDR="198.51.100.0/24"
SERVICE_CIDR="203.0.113.0/24"
CNI_BIN_DIR="/usr/lib/cni"
# Host paths the kubelet or the CNI library create whatever their configuration.
HOST_PATHS=(/var/lib/kubelet /var/lib/kubelet/device-plugins /var/lib/kubelet/device-plugins/kubelet.sock
    /var/log/containers /var/log/pods /var/lib/cni /run/containerd /run/containerd/s)
# Sysctls the kubelet's container manager sets (pkg/kubelet/cm setupKernelTunables),
# and the one the bridge plugin sets when the bridge is the pods' gateway.
KUBELET_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
    kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/ip_forward)
# Started in this order; `down` stops the controllers first, then the others in
# the reverse order.
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)
CONTROLLERS=(kube-controller-manager kube-scheduler)
WITH_CONTROLLERS="${E2E_WITH_CONTROLLERS:-0}"
CURRENT_STEP="start"

log() { echo "e2e-cluster: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- layout

# set_layout DIR: every path and name derived from DIR (which must exist), as globals.
set_layout() {
    [[ "$1" != *[[:space:]]* ]] || die "DIR must not contain whitespace: '$1'"
    D="$(cd "$1" && pwd -P)"
    RECORDS="$D/records"
    LOGS="$D/logs"
    PKI="$D/pki"
    CTRD="$D/containerd"
    CTRD_SOCK="$CTRD/containerd.sock"
    CNI_CONF_DIR="$D/cni/net.d"
    KUBELET_ROOT="$D/kubelet"
    # Names unique to DIR, so that a leftover of another cluster is never taken
    # for ours. Interface names are at most 15 bytes.
    HASH="$(printf '%s' "$D" | sha256sum | cut -c1-8)"
    BRIDGE="e2e$HASH"
    CNI_NETWORK="e2e-$HASH"
    CGROUP_ROOT="e2e-$HASH"
}

# ---------------------------------------------------------------- helpers

now() { echo "${EPOCHREALTIME/[.,]/}"; }

# step DESCRIPTION COMMAND...: run COMMAND, then print one line with its duration.
step() {
    local what="$1" start
    shift
    start="$(now)"
    CURRENT_STEP="$what"
    "$@"
    local us=$(($(now) - start))
    printf 'e2e-cluster: %-44s %3d.%01d s\n' "$what" $((us / 1000000)) $((us % 1000000 / 100000)) >&2
}

pid_of() { cat "$RECORDS/$1.pid" 2>/dev/null || true; }

# is_ours PID: the process exists and its command line names DIR, so a pid
# reused by an unrelated process is never signalled.
is_ours() {
    local pid="$1" cmdline
    [[ -n "$pid" ]] || return 1
    # 2> before <: the process may be gone by the time the file is opened.
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ "$cmdline" == *"$D/"* ]]
}

# start_daemon NAME COMMAND...: run COMMAND in its own session (a Ctrl-C aimed
# at the caller must not kill the cluster), stdio detached from the caller (a
# caller capturing our output would otherwise wait for the daemons to exit).
start_daemon() {
    local name="$1"
    shift
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$RECORDS/$name.pid"
}

# wait_for NAME TIMEOUT COMMAND...: until COMMAND succeeds; fail at once when
# daemon NAME exits, with the end of its log.
wait_for() {
    local name="$1" timeout="$2" deadline out
    shift 2
    deadline=$((SECONDS + timeout))
    while true; do
        if out="$("$@" 2>&1)"; then return 0; fi
        if ! is_ours "$(pid_of "$name")"; then
            log "$name exited; last lines of $LOGS/$name.log:"
            tail -n 25 "$LOGS/$name.log" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$name not ready after ${timeout}s: $out"
            log "last lines of $LOGS/$name.log:"
            tail -n 25 "$LOGS/$name.log" >&2 || true
            return 1
        fi
        sleep 0.3
    done
}

# kapi ARGS...: the Python helper, with the admin credentials when asked.
kapi() { python3 "$KAPI" "$@"; }
admin_tls() { echo --server "$APISERVER" --ca "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key"; }

# ---------------------------------------------------------------- preflight

check_node_name() {
    # What the API server accepts as a Node name (lowercase RFC 1123 subdomain).
    [[ "$NODE_NAME" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ ]] ||
        die "E2E_NODE_NAME '$NODE_NAME' is not a valid node name (lowercase RFC 1123 subdomain)"
}

require_root() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (mounts, cgroups, network namespaces)"
}

# install_packages: Debian packages for etcd, containerd, runc, busybox and the
# CNI plugins, when one of their files is missing.
install_packages() {
    local missing=()
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v containerd >/dev/null && command -v ctr >/dev/null &&
        command -v containerd-shim-runc-v2 >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    [[ -x /bin/busybox ]] || missing+=(busybox-static)
    [[ -x "$CNI_BIN_DIR/bridge" && -x "$CNI_BIN_DIR/host-local" && -x "$CNI_BIN_DIR/loopback" ]] ||
        missing+=(containernetworking-plugins)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    log "installing Debian packages: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-upgrade "${missing[@]}" >"$LOGS/apt.log" 2>&1; then
        # An old or empty package list is the usual cause: refresh it once.
        apt-get update >>"$LOGS/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-upgrade "${missing[@]}" >>"$LOGS/apt.log" 2>&1 ||
            die "apt-get install ${missing[*]} failed; see $LOGS/apt.log"
    fi
}

# check_tools: every binary `up` calls, each named when missing.
check_tools() {
    local tool
    for tool in etcd containerd containerd-shim-runc-v2 ctr runc openssl python3 ip mount umount \
        mountpoint unshare setsid nsenter flock timeout sha256sum go; do
        command -v "$tool" >/dev/null || die "missing binary: $tool"
    done
    for tool in bridge host-local loopback; do
        [[ -x "$CNI_BIN_DIR/$tool" ]] || die "missing CNI plugin $CNI_BIN_DIR/$tool (package containernetworking-plugins)"
    done
}

# build_kubernetes: the Kubernetes binaries (cached: returns at once when built).
build_kubernetes() {
    local binary needed=(kube-apiserver kubelet)
    if ((WITH_CONTROLLERS)); then needed+=("${CONTROLLERS[@]}"); fi
    for binary in "${needed[@]}"; do
        if [[ ! -x "$K8S_BIN/$binary" ]]; then
            log "the Kubernetes $K8S_VERSION binaries are not built yet: building them (12-30 minutes on 2 CPUs)"
            break
        fi
    done
    K8S_VERSION="$K8S_VERSION" "$ROOT/scripts/build-kubernetes.sh" >>"$LOGS/build-kubernetes.log" 2>&1 ||
        die "scripts/build-kubernetes.sh failed; see $LOGS/build-kubernetes.log"
    for binary in "${needed[@]}"; do
        [[ -x "$K8S_BIN/$binary" ]] || die "missing $K8S_BIN/$binary after scripts/build-kubernetes.sh"
    done
}

# check_kernel: cgroups, bridges and network namespaces; choose the snapshotter.
check_kernel() {
    grep -qE ' - cgroup2? ' /proc/self/mountinfo || die "kernel feature missing: no cgroup filesystem mounted"
    [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] ||
        die "kernel feature missing: memory cgroup controller"
    local probe="e2ep$HASH"
    ip link add "$probe" type bridge 2>/dev/null || die "kernel feature missing: cannot create a bridge (module bridge)"
    ip link del "$probe"
    unshare --net true 2>/dev/null || die "kernel feature missing: cannot create a network namespace"
    SNAPSHOTTER=overlayfs
    if ! overlay_works; then
        SNAPSHOTTER=native
        log "overlayfs does not work under $D; containerd uses the native snapshotter (slower, more disk)"
    fi
}

# overlay_works: mount and unmount a throwaway overlay filesystem under DIR.
overlay_works() {
    local p="$D/overlay-probe" ok=1
    mkdir -p "$p"/{lower,upper,work,merged}
    if mount -t overlay overlay -o "lowerdir=$p/lower,upperdir=$p/upper,workdir=$p/work" "$p/merged" 2>/dev/null; then
        umount "$p/merged"
        ok=0
    fi
    rm -rf "$p"
    return $ok
}

# check_dir: DIR is usable, and free of an earlier cluster: one still
# running, or one whose `down` did not run (its records of the host state
# would be overwritten and never restored). State of an earlier cluster that
# was taken down is wiped: a new cluster starts empty.
check_dir() {
    # The longest Unix socket path under DIR is the driver's registration
    # socket; the kernel limits such a path to 107 bytes.
    local longest="$KUBELET_ROOT/plugins_registry/k8s.csi.datadoghq.com-reg.sock"
    ((${#longest} <= 107)) ||
        die "DIR path too long (${#D} characters, at most 51): Unix socket paths under it such as $longest exceed 107 bytes"
    local name
    for name in "${DAEMONS[@]}"; do
        if is_ours "$(pid_of "$name")"; then
            die "$name of this DIR still runs (pid $(pid_of "$name")); run: $SELF down $D"
        fi
    done
    if [[ -f "$RECORDS/host-paths" || -f "$RECORDS/sysctls" || -f "$RECORDS/mntns" ]]; then
        die "an earlier cluster in $D was not taken down; run: $SELF down $D"
    fi
    [[ -z "$(mounts_under_dir)" ]] || die "mounts left under $D; run: $SELF down $D"
    rm -rf "$RECORDS" "$LOGS" "$PKI" "$CTRD" "$KUBELET_ROOT" "$D"/{etcd,cni,images,volume-plugins} \
        "$D"/{env,kubelet-config.yaml}
}

# ---------------------------------------------------------------- host state

# record_host_state: what `down` must restore or leave alone.
record_host_state() {
    local path sysctl
    readlink /proc/self/ns/mnt >"$RECORDS/mntns"
    : >"$RECORDS/host-paths"
    for path in "${HOST_PATHS[@]}"; do
        if [[ -e "$path" || -L "$path" ]]; then
            echo "present $path"
        else
            echo "absent $path"
        fi
    done >"$RECORDS/host-paths"
    for sysctl in "${KUBELET_SYSCTLS[@]}"; do
        if [[ -r "/proc/sys/$sysctl" ]]; then echo "$sysctl $(cat "/proc/sys/$sysctl")"; fi
    done >"$RECORDS/sysctls"
    printf '%s\n' "$BRIDGE" >"$RECORDS/bridge"
    printf '%s\n' "$CGROUP_ROOT" >"$RECORDS/cgroup-root"
}

# ---------------------------------------------------------------- certificates

# new_key FILE: an ECDSA P-256 key (fast to make; accepted by every component).
new_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; chmod 600 "$1"; }

# sign_cert NAME SUBJECT EXTENSIONS: PKI/NAME.{key,crt} signed by the CA.
sign_cert() {
    local name="$1" subject="$2" extensions="$3"
    new_key "$PKI/$name.key"
    openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
        -extfile <(printf '%s\n' "$extensions") -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr"
}

client_ext() { printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'; }
server_ext() {
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s' "$1"
}

# write_kubeconfig FILE USER: a kubeconfig using PKI/USER.{crt,key}.
write_kubeconfig() {
    local file="$1" user="$2"
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $APISERVER
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$user.crt
    client-key: $PKI/$user.key
contexts:
- name: e2e
  context: {cluster: e2e, user: $user}
current-context: e2e
EOF
}

make_pki() {
    mkdir -p "$PKI"
    new_key "$PKI/ca.key"
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=e2e-cluster-ca" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$PKI/ca.crt" 2>/dev/null
    sign_cert apiserver "/CN=kube-apiserver" \
        "$(server_ext "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:${SERVICE_CIDR%.*}.1")"
    sign_cert admin "/O=system:masters/CN=e2e-admin" "$(client_ext)"
    sign_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$(client_ext)"
    sign_cert kubelet-serving "/CN=$NODE_NAME" "$(server_ext "IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME")"
    sign_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$(client_ext)"
    new_key "$PKI/sa.key"
    openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    write_kubeconfig "$PKI/admin.kubeconfig" admin
    write_kubeconfig "$PKI/kubelet.kubeconfig" kubelet
    if ((WITH_CONTROLLERS)); then
        # The users the API server's bootstrap RBAC policy grants their roles to.
        local name
        for name in "${CONTROLLERS[@]}"; do
            sign_cert "$name" "/CN=system:$name" "$(client_ext)"
            # A serving certificate from the cluster CA, so that its /healthz
            # can be polled with the same CA as the API server's.
            sign_cert "$name-serving" "/CN=$name" "$(server_ext "IP:127.0.0.1,DNS:localhost")"
            write_kubeconfig "$PKI/$name.kubeconfig" "$name"
        done
    fi
}

# ---------------------------------------------------------------- etcd, API server

pick_ports() {
    read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT KCM_PORT SCHEDULER_PORT \
        < <(kapi free-ports 7)
    APISERVER="https://127.0.0.1:$APISERVER_PORT"
    ETCD_URL="http://127.0.0.1:$ETCD_PORT"
}

start_etcd() {
    mkdir -p "$D/etcd"
    start_daemon etcd etcd --name e2e --data-dir "$D/etcd/data" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
        --logger zap --log-outputs stderr
    wait_for etcd 30 kapi http-ok "$ETCD_URL/health"
}

start_apiserver() {
    start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers "$ETCD_URL" \
        --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
        --cert-dir "$PKI/apiserver-generated" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --authorization-mode Node,RBAC \
        --allow-privileged=true \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$PKI/ca.crt" \
        --kubelet-preferred-address-types Hostname \
        --profiling=false
    # shellcheck disable=SC2046  # admin_tls is a list of arguments
    wait_for kube-apiserver 90 kapi http-ok "$APISERVER/readyz" $(admin_tls)
}

# ---------------------------------------------------------------- controllers

# One instance each: no leader election, so that neither waits for a lease.
start_controller_manager() {
    start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
        --kubeconfig "$PKI/kube-controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
        --tls-cert-file "$PKI/kube-controller-manager-serving.crt" \
        --tls-private-key-file "$PKI/kube-controller-manager-serving.key" \
        --leader-elect=false \
        --service-account-private-key-file "$PKI/sa.key" \
        --root-ca-file "$PKI/ca.crt" \
        --use-service-account-credentials \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --allocate-node-cidrs=false \
        --cluster-cidr "$POD_CIDR" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --profiling=false \
        --v 2
}

start_scheduler() {
    start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
        --kubeconfig "$PKI/kube-scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
        --tls-cert-file "$PKI/kube-scheduler-serving.crt" \
        --tls-private-key-file "$PKI/kube-scheduler-serving.key" \
        --leader-elect=false \
        --profiling=false \
        --v 2
}

# start_controllers: both at once (each takes a second or two to serve).
start_controllers() {
    start_controller_manager
    start_scheduler
    wait_for kube-controller-manager 60 kapi http-ok "https://127.0.0.1:$KCM_PORT/healthz" --ca "$PKI/ca.crt"
    wait_for kube-scheduler 60 kapi http-ok "https://127.0.0.1:$SCHEDULER_PORT/healthz" --ca "$PKI/ca.crt"
}

# ---------------------------------------------------------------- containerd

write_containerd_config() {
    mkdir -p "$CTRD"/{root,state,opt,runc}
    # Plugins that would touch host paths or probe for absent filesystems are off.
    cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"

# Unused (the CRI plugin runs runc.v2), but the tasks service requires it.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$CTRD/runc-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: a container may not get an oom_score_adj
  # below containerd's own, or runc fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  # Network namespaces under DIR, not /var/run/netns, so that down finds them.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAPSHOTTER"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CTRD/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
}

# write_cni_config: one bridge without masquerade: pods get an address (the
# kubelet needs one). Without controllers the bridge is no gateway either, so
# the host has no route to the pods. With them it is (198.51.100.1): the
# kubelet's HTTP probes of a DaemonSet's pods reach the pod IP from the host,
# as on any node.
write_cni_config() {
    local gateway=false
    if ((WITH_CONTROLLERS)); then gateway=true; fi
    mkdir -p "$CNI_CONF_DIR" "$D/cni/ipam"
    cat >"$CNI_CONF_DIR/10-e2e.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": $gateway,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "dataDir": "$D/cni/ipam"
      }
    }
  ]
}
EOF
}

start_containerd() {
    write_containerd_config
    write_cni_config
    start_daemon containerd containerd --config "$CTRD/config.toml" --log-level info
    wait_for containerd 30 ctr --address "$CTRD_SOCK" version
}

# images ARGS...: scripts/e2e-images.sh; sets PAUSE_IMAGE and APP_IMAGE from
# its NAME=reference lines.
images() {
    local out line
    out="$("$ROOT/scripts/e2e-images.sh" "$@" "$D" 2>>"$LOGS/images.log")" ||
        die "scripts/e2e-images.sh failed; see $LOGS/images.log"
    while IFS= read -r line; do
        case "$line" in
            PAUSE_IMAGE=*) PAUSE_IMAGE="${line#*=}" ;;
            APP_IMAGE=*) APP_IMAGE="${line#*=}" ;;
        esac
    done <<<"$out"
}

# The sandbox image goes into containerd's configuration: build (or find in
# the cache) before containerd starts, import once it answers.
build_images() { images --build-only; }
import_images() { images --address "$CTRD_SOCK" --snapshotter "$SNAPSHOTTER"; }

# ---------------------------------------------------------------- kubelet

# make_cgroup_root: the kubelet's --cgroup-root, created in every hierarchy
# (the kubelet refuses a root that does not exist), so that every cgroup of the
# cluster is under one name that `down` removes.
make_cgroup_root() {
    local mnt
    while read -r mnt; do
        mkdir -p "$mnt/$CGROUP_ROOT"
        # A new cpuset cgroup starts with no CPUs and no memory nodes.
        if [[ -f "$mnt/cpuset.cpus" && -f "$mnt/$CGROUP_ROOT/cpuset.cpus" ]]; then
            [[ -n "$(cat "$mnt/$CGROUP_ROOT/cpuset.cpus")" ]] || cat "$mnt/cpuset.cpus" >"$mnt/$CGROUP_ROOT/cpuset.cpus"
            [[ -n "$(cat "$mnt/$CGROUP_ROOT/cpuset.mems")" ]] || cat "$mnt/cpuset.mems" >"$mnt/$CGROUP_ROOT/cpuset.mems"
        fi
    done < <(cgroup_mounts)
    if [[ -f /sys/fs/cgroup/cgroup.controllers && ! -d /sys/fs/cgroup/memory ]]; then
        # Pure cgroup v2: let the kubelet use every controller below its root.
        local c controllers
        read -r -a controllers <"/sys/fs/cgroup/$CGROUP_ROOT/cgroup.controllers" || true
        for c in "${controllers[@]}"; do
            echo "+$c" >"/sys/fs/cgroup/$CGROUP_ROOT/cgroup.subtree_control" 2>/dev/null || true
        done
    fi
}

# cgroup_mounts: mount points of every cgroup (v1 and v2) hierarchy.
cgroup_mounts() {
    awk '{ for (i = 7; $i != "-"; i++); if ($(i + 1) == "cgroup" || $(i + 1) == "cgroup2") print $5 }' \
        /proc/self/mountinfo | sort -u
}

# share_kubelet_root: the kubelet root as its own shared mount, as on a real
# node: mounts made below it (by the CSI driver, by the kubelet) propagate to
# the containers that bind them with mountPropagation.
share_kubelet_root() {
    mkdir -p "$KUBELET_ROOT"
    if ! mountpoint -q "$KUBELET_ROOT"; then
        mount --bind "$KUBELET_ROOT" "$KUBELET_ROOT"
    fi
    mount --make-rshared "$KUBELET_ROOT"
}

write_kubelet_config() {
    mkdir -p "$LOGS/pods" "$D/volume-plugins"
    cat >"$D/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CTRD_SOCK
imageServiceEndpoint: unix://$CTRD_SOCK
# cgroup v1 and PID 1 is not systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
# No iptables chains on the host: nothing here needs them.
makeIPTablesUtilChains: false
podLogsDir: $LOGS/pods
volumePluginDir: $D/volume-plugins
# Images cannot be pulled again here: never garbage-collect them, never evict
# for a full disk of the developer's machine.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
resolvConf: /etc/resolv.conf
# Frequent status updates: tests see pod phases sooner.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
# Volume stats (NodeGetVolumeStats for CSI volumes) every 10 s, not every minute.
volumeStatsAggPeriod: 10s
EOF
}

start_kubelet() {
    write_kubelet_config
    start_kubelet_process
}

start_kubelet_process() {
    start_daemon kubelet "$K8S_BIN/kubelet" \
        --config "$D/kubelet-config.yaml" \
        --kubeconfig "$PKI/kubelet.kubeconfig" \
        --root-dir "$KUBELET_ROOT" \
        --cert-dir "$KUBELET_ROOT/pki" \
        --hostname-override "$NODE_NAME" \
        --v 2
    # shellcheck disable=SC2046
    wait_for kubelet "$NODE_TIMEOUT" kapi node-ready "$NODE_NAME" $(admin_tls)
}

# prepare_node: without a controller-manager the not-ready taint the API
# server put at registration is never lifted; lift it so the node looks like
# any Ready node (pods with spec.nodeName ignore NoSchedule taints anyway).
prepare_node() {
    # shellcheck disable=SC2046
    kapi untaint "$NODE_NAME" node.kubernetes.io/not-ready $(admin_tls)
}

write_env() {
    cat >"$D/env.tmp" <<EOF
CLUSTER_DIR=$D
KUBECONFIG=$PKI/admin.kubeconfig
APISERVER=$APISERVER
CA_CERT=$PKI/ca.crt
ADMIN_CERT=$PKI/admin.crt
ADMIN_KEY=$PKI/admin.key
NODE_NAME=$NODE_NAME
KUBELET_ROOT=$KUBELET_ROOT
KUBELET_PORT=$KUBELET_PORT
KUBELET_LOG=$LOGS/kubelet.log
CONTAINERD_ADDRESS=$CTRD_SOCK
CONTAINERD_NAMESPACE=k8s.io
SNAPSHOTTER=$SNAPSHOTTER
CNI_BRIDGE=$BRIDGE
CNI_CONF_DIR=$CNI_CONF_DIR
POD_CIDR=$POD_CIDR
SERVICE_CIDR=$SERVICE_CIDR
CGROUP_ROOT=/$CGROUP_ROOT
ETCD_URL=$ETCD_URL
PAUSE_IMAGE=$PAUSE_IMAGE
APP_IMAGE=$APP_IMAGE
LOG_DIR=$LOGS
WITH_CONTROLLERS=$WITH_CONTROLLERS
EOF
    mv "$D/env.tmp" "$D/env"
}

# ---------------------------------------------------------------- up

up() {
    mkdir -p "$1"
    set_layout "$1"
    require_root
    check_node_name
    check_dir
    mkdir -p "$RECORDS" "$LOGS"
    local started
    started="$(now)"
    # From here on, any failure stops and removes whatever was started.
    trap 'up_failed' EXIT
    # A signal must end up in up_failed too, not leave a half-started cluster.
    trap 'CURRENT_STEP+=" (interrupted)"; exit 130' INT
    trap 'CURRENT_STEP+=" (terminated)"; exit 143' TERM
    step "record host state" record_host_state
    step "install missing Debian packages" install_packages
    step "check binaries" check_tools
    step "build Kubernetes binaries" build_kubernetes
    step "check kernel features" check_kernel
    pick_ports
    step "certificates and kubeconfigs" make_pki
    step "etcd on 127.0.0.1:$ETCD_PORT" start_etcd
    step "kube-apiserver on 127.0.0.1:$APISERVER_PORT" start_apiserver
    if ((WITH_CONTROLLERS)); then
        step "kube-controller-manager, kube-scheduler" start_controllers
    fi
    step "images built" build_images
    step "containerd ($SNAPSHOTTER)" start_containerd
    step "images imported" import_images
    step "kubelet root shared, cgroup root created" prepare_kubelet_host
    step "kubelet; node $NODE_NAME Ready" start_kubelet
    step "node prepared" prepare_node
    write_env
    trap - EXIT INT TERM
    local us=$(($(now) - started))
    log "up in $((us / 1000000)).$((us % 1000000 / 100000)) s; environment in $D/env"
}

prepare_kubelet_host() {
    share_kubelet_root
    make_cgroup_root
}

up_failed() {
    local rc=$?
    trap - EXIT INT TERM
    log "ERROR: up failed during: $CURRENT_STEP; stopping what was started (logs in $LOGS)"
    down_in_namespace || true
    exit $((rc == 0 ? 1 : rc))
}

# restart_kubelet DIR: stop the kubelet and start it again with the same
# configuration, as a node's kubelet restarts under running pods (it then
# reconstructs their volumes from what it finds on disk).
restart_kubelet() {
    set_layout "$1"
    require_root
    [[ -f "$D/env" ]] || die "no cluster is up in $D"
    APISERVER="$(sed -n 's/^APISERVER=//p' "$D/env")"
    NODE_NAME="$(sed -n 's/^NODE_NAME=//p' "$D/env")"
    step "kubelet stopped" stop_daemon kubelet
    step "kubelet started; node $NODE_NAME Ready" start_kubelet_process
}

# ---------------------------------------------------------------- down

down() {
    if [[ ! -d "$1" ]]; then
        log "$1 does not exist: nothing to stop"
        return 0
    fi
    set_layout "$1"
    require_root
    if [[ ! -d "$RECORDS" ]]; then
        log "nothing recorded in $D/records: nothing to stop"
        return 0
    fi
    enter_recorded_namespace
    local started rc=0
    started="$(now)"
    down_in_namespace || rc=1
    local us=$(($(now) - started))
    log "down in $((us / 1000000)).$((us % 1000000 / 100000)) s"
    return $rc
}

# enter_recorded_namespace: the cluster's mounts exist only in the mount
# namespace `up` ran in; when the caller is elsewhere and that namespace still
# has a process, run `down` again inside it.
enter_recorded_namespace() {
    local want have proc
    want="$(cat "$RECORDS/mntns" 2>/dev/null || true)"
    have="$(readlink /proc/self/ns/mnt)"
    [[ -n "$want" && "$want" != "$have" && -z "${E2E_CLUSTER_REENTERED:-}" ]] || return 0
    for proc in /proc/[0-9]*; do
        if [[ "$(readlink "$proc/ns/mnt" 2>/dev/null)" == "$want" ]]; then
            log "entering the mount namespace of up ($want, via pid ${proc#/proc/})"
            # Entering a mount namespace resets the working directory: absolute paths only.
            E2E_CLUSTER_REENTERED=1 exec nsenter --mount="$proc/ns/mnt" -- "$SELF" down "$D"
        fi
    done
    log "the mount namespace of up ($want) is gone; its mounts went with it"
}

# down_in_namespace: every cleanup step, each one even when an earlier one
# failed; non-zero when any did.
down_in_namespace() {
    local failed=0
    # First, so that they do not react to the rest going away.
    if [[ -f "$RECORDS/kube-controller-manager.pid" || -f "$RECORDS/kube-scheduler.pid" ]]; then
        cleanup "kube-controller-manager, kube-scheduler stopped" stop_daemons "${CONTROLLERS[@]}" || failed=1
    fi
    cleanup "kubelet stopped" stop_daemon kubelet || failed=1
    cleanup "pods stopped" stop_containers || failed=1
    cleanup "containerd, kube-apiserver, etcd stopped" stop_daemons containerd kube-apiserver etcd || failed=1
    cleanup "mounts under DIR removed" unmount_all || failed=1
    cleanup "cgroups removed" remove_cgroups || failed=1
    cleanup "bridge removed" remove_bridge || failed=1
    cleanup "sysctls restored" restore_sysctls || failed=1
    cleanup "host paths cleaned" clean_host_paths || failed=1
    rm -f "$D/env" "$RECORDS/mntns"
    return $failed
}

# cleanup DESCRIPTION COMMAND...: step, with a warning instead of an exit on failure.
cleanup() {
    step "$@" && return 0
    log "WARNING: $1: did not complete"
    return 1
}

# stop_daemon NAME: SIGTERM, up to 10 s, then SIGKILL.
stop_daemon() {
    local name="$1" pid i
    pid="$(pid_of "$name")"
    if is_ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            is_ours "$pid" || break
            sleep 0.1
        done
        if is_ours "$pid"; then
            log "$name (pid $pid) ignored SIGTERM for 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$RECORDS/$name.pid"
}

stop_daemons() {
    local name
    for name in "$@"; do stop_daemon "$name"; done
}

# stop_containers: every container process of the cluster, then every shim.
# With containerd up, tasks are removed through it (the shims then exit and
# remove their sockets); whatever remains is killed through the cgroup tree and
# the shims' command lines, which name this cluster's containerd socket.
stop_containers() {
    local id
    if is_ours "$(pid_of containerd)"; then
        for id in $(timeout 5 ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null || true); do
            timeout 5 ctr --address "$CTRD_SOCK" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
        done
    fi
    kill_cgroup_processes
    kill_shims
}

# cgroup_dirs: this cluster's cgroup directories, deepest first.
cgroup_dirs() {
    local mnt
    while read -r mnt; do
        [[ -d "$mnt/$CGROUP_ROOT" ]] && find "$mnt/$CGROUP_ROOT" -depth -type d
    done < <(cgroup_mounts)
    return 0
}

kill_cgroup_processes() {
    local i pids
    for ((i = 0; i < 50; i++)); do
        pids="$(cgroup_dirs | while read -r dir; do cat "$dir/cgroup.procs" 2>/dev/null; done | sort -u)"
        [[ -n "$pids" ]] || return 0
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    log "processes left in cgroup $CGROUP_ROOT: $pids"
    return 1
}

kill_shims() {
    local proc pid cmdline
    for proc in /proc/[0-9]*; do
        cmdline="$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline")" || continue
        if [[ "$cmdline" == *containerd-shim* && "$cmdline" == *"-address $CTRD_SOCK "* ]]; then
            pid="${proc#/proc/}"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    remove_shim_sockets
}

# remove_shim_sockets: sockets of killed shims; containerd names them
# /run/containerd/s/sha256(<address>/<namespace>/<id>).
remove_shim_sockets() {
    local task id
    [[ -d /run/containerd/s && -d "$CTRD/state/io.containerd.runtime.v2.task" ]] || return 0
    for task in "$CTRD/state/io.containerd.runtime.v2.task"/*/*; do
        [[ -d "$task" ]] || continue
        id="$(basename "$(dirname "$task")")/$(basename "$task")"
        rm -f "/run/containerd/s/$(printf '%s' "$CTRD_SOCK/$id" | sha256sum | cut -d' ' -f1)"
    done
}

# mounts_under_dir: mount points below DIR (or DIR itself), deepest first.
mounts_under_dir() {
    # mountinfo escapes space, tab, newline and backslash as octal.
    awk '{ print $5 }' /proc/self/mountinfo | while read -r mnt; do
        mnt="$(printf '%b' "$mnt")"
        [[ "$mnt" == "$D" || "$mnt" == "$D/"* ]] && echo "$mnt"
    done | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
    return 0
}

unmount_all() {
    local mnt i
    # Several passes: a mount may be busy until its children are gone.
    for ((i = 0; i < 5; i++)); do
        while IFS= read -r mnt; do
            umount "$mnt" 2>/dev/null || true
        done < <(mounts_under_dir)
        [[ -z "$(mounts_under_dir)" ]] && return 0
        sleep 0.2
    done
    # Still busy: detach them, they go away when their last user does.
    while IFS= read -r mnt; do
        log "WARNING: $mnt busy; lazy unmount"
        umount -l "$mnt" 2>/dev/null || true
    done < <(mounts_under_dir)
    [[ -z "$(mounts_under_dir)" ]] || { log "mounts left under $D:"; mounts_under_dir >&2; return 1; }
}

remove_cgroups() {
    local dir i
    for ((i = 0; i < 20; i++)); do
        while read -r dir; do rmdir "$dir" 2>/dev/null || true; done < <(cgroup_dirs)
        [[ -z "$(cgroup_dirs)" ]] && return 0
        sleep 0.25
    done
    log "cgroups left: $(cgroup_dirs | tr '\n' ' ')"
    return 1
}

# remove_bridge: the bridge and any host-side veth still enslaved to it (a
# pod's veth pair goes away with its network namespace, normally).
remove_bridge() {
    local dev
    ip link show "$BRIDGE" >/dev/null 2>&1 || return 0
    for dev in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
        ip link del "$dev" 2>/dev/null || true
    done
    ip link del "$BRIDGE"
}

# restore_sysctls: the values from before the kubelet set its own.
restore_sysctls() {
    local name value
    [[ -f "$RECORDS/sysctls" ]] || return 0
    while read -r name value; do
        if [[ "$(cat "/proc/sys/$name" 2>/dev/null)" != "$value" ]]; then
            echo "$value" >"/proc/sys/$name" || { log "cannot restore $name=$value"; return 1; }
        fi
    done <"$RECORDS/sysctls"
    rm -f "$RECORDS/sysctls"
}

# clean_host_paths: a fixed host path absent before `up` is removed (deepest
# first, so that a parent we created goes when empty); one that was there
# keeps everything but this cluster's own entries.
clean_host_paths() {
    local state path
    [[ -f "$RECORDS/host-paths" ]] || return 0
    while read -r state path; do
        if [[ "$state" == absent ]]; then
            case "$path" in
                # Parents of other entries: only when empty (a socket of
                # another user would keep them).
                /var/lib/kubelet | /run/containerd) rmdir "$path" 2>/dev/null || true ;;
                /run/containerd/s) rmdir "$path" 2>/dev/null || true ;;
                *) rm -rf "$path" ;;
            esac
        else
            clean_shared_path "$path"
        fi
    done < <(sort -r -k2 "$RECORDS/host-paths")
    rm -f "$RECORDS/host-paths"
}

# clean_shared_path PATH: our entries in a host path that existed before `up`.
clean_shared_path() {
    local link
    case "$1" in
        /var/log/containers)
            # Symlinks the kubelet made to this cluster's pod logs.
            for link in /var/log/containers/*; do
                [[ -L "$link" && "$(readlink "$link")" == "$LOGS/"* ]] && rm -f "$link"
            done
            ;;
        /var/lib/cni)
            # The CNI library's result cache: by network name, and for the
            # loopback network by the sandbox ids of this containerd.
            rm -rf /var/lib/cni/results/"$CNI_NETWORK"-* /var/lib/cni/networks/"$CNI_NETWORK"
            local sandbox
            for sandbox in "$CTRD"/{root,state}/io.containerd.grpc.v1.cri/sandboxes/*; do
                [[ -d "$sandbox" ]] && rm -f "/var/lib/cni/results/cni-loopback-$(basename "$sandbox")-lo"
            done
            ;;
    esac
    return 0
}

# ---------------------------------------------------------------- main

usage() {
    echo "usage: $SELF up DIR [--with-controllers] | down DIR | restart-kubelet DIR" >&2
    exit 2
}

main() {
    local command="${1:-}" dir=""
    (($#)) && shift
    while (($#)); do
        case "$1" in
            --with-controllers) [[ "$command" == up ]] || usage; WITH_CONTROLLERS=1 ;;
            -*) usage ;;
            *) [[ -z "$dir" ]] || usage; dir="$1" ;;
        esac
        shift
    done
    [[ -n "$dir" ]] || usage
    [[ "$WITH_CONTROLLERS" == [01] ]] || die "E2E_WITH_CONTROLLERS must be 0 or 1, not '$WITH_CONTROLLERS'"
    case "$command" in
        up) up "$dir" ;;
        down) down "$dir" ;;
        restart-kubelet) restart_kubelet "$dir" ;;
        *) usage ;;
    esac
}

main "$@"
