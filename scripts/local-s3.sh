#!/usr/bin/env bash
# A real S3 server for development and tests: Ceph radosgw on a one-node cluster (one mon, one OSD on memstore),
# listening on 127.0.0.1 only. Data lives in RAM and is gone when it stops.
#
#   scripts/local-s3.sh install          # apt packages (radosgw ceph-mon ceph-osd), once per machine
#   scripts/local-s3.sh start DIR [PORT [MON_PORT]]  # prints the environment to export (endpoint, keys, region);
#                                        # the monitor listens on MON_PORT, PORT + 1 unless given
#   scripts/local-s3.sh stop DIR
set -euo pipefail

cmd=${1:-}
dir=${2:-}
rgw_port=${3:-7480}
mon_port=${4:-$((rgw_port + 1))}
access_key=priorflowtest
secret_key=priorflowtestsecret

need_dir() { [ -n "$dir" ] || { echo "usage: $0 $cmd DIR [PORT]" >&2; exit 2; }; }

install() {
    if command -v radosgw >/dev/null && command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null; then return; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd ceph-common >/dev/null
}

wait_for() {  # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

start() {
    need_dir
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/rgw.pid" ] && kill -0 "$(cat "$dir/rgw.pid")" 2>/dev/null; then
        echo "already running in $dir" >&2; env_lines; return
    fi
    rm -rf "${dir:?}"/{mon,osd,run,log,ceph.conf,monmap,keyring}
    mkdir -p "$dir"/{mon,osd/ceph-0,run,log}
    local fsid; fsid=$(cat /proc/sys/kernel/random/uuid)
    cat > "$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
osd objectstore = memstore
memstore device bytes = 3221225472
osd class update on start = false
osd crush update on start = false
osd max object name len = 256
osd max object namespace len = 64
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
keyring = $dir/keyring
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
[client.rgw.priorflow]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = 127.0.0.1
rgw thread pool size = 64
CONF
    local conf=(-c "$dir/ceph.conf")
    ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    monmaptool --create --addv a "[v1:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
    ceph-mon "${conf[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
    ceph-mon "${conf[@]}" -i a
    wait_for 30 ceph "${conf[@]}" -s --connect-timeout 2
    # one uuid for the map and the OSD's store, and a crush entry made here rather than by the OSD at boot:
    # letting the OSD do either races with the monitor ("wrong fsid") about one start in three
    local uuid id; uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(ceph "${conf[@]}" osd create "$uuid")
    ceph-osd "${conf[@]}" -i "$id" --mkfs --osd-uuid "$uuid" 2>/dev/null
    ceph "${conf[@]}" osd crush add-bucket localhost host >/dev/null 2>&1
    ceph "${conf[@]}" osd crush move localhost root=default >/dev/null 2>&1
    ceph "${conf[@]}" osd crush add "osd.$id" 1.0 host=localhost >/dev/null 2>&1
    ceph-osd "${conf[@]}" -i "$id"
    wait_for 60 sh -c "ceph ${conf[*]} osd stat | grep -q '1 up'"
    radosgw "${conf[@]}" -n client.rgw.priorflow
    wait_for 60 sh -c "pgrep -f 'radosgw.*client.rgw.priorflow' > '$dir/rgw.pid'"
    wait_for 90 curl -sf "http://127.0.0.1:$rgw_port"
    radosgw-admin "${conf[@]}" -n client.admin user create --uid=priorflow --display-name=priorflow \
        --access-key="$access_key" --secret="$secret_key" >/dev/null
    env_lines
}

env_lines() {
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port"
    echo "export AWS_ACCESS_KEY_ID=$access_key"
    echo "export AWS_SECRET_ACCESS_KEY=$secret_key"
    echo "export AWS_DEFAULT_REGION=us-east-1"
}

stop() {
    need_dir
    dir=$(cd "$dir" && pwd)
    # radosgw ignores SIGTERM for seconds; the data is in RAM anyway
    for pattern in "radosgw -c $dir/" "ceph-osd -c $dir/" "ceph-mon -c $dir/"; do
        pkill -9 -f "$pattern" 2>/dev/null || true
    done
    rm -f "$dir/rgw.pid"
}

case "$cmd" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install | start DIR [PORT [MON_PORT]] | stop DIR" >&2; exit 2 ;;
esac
