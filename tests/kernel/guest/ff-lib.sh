# ferrofab guest helper library (busybox ash). In a guest test script:
#     . /usr/lib/ferrofab/ff-lib.sh
#
# Logging / control
#   ff_log MSG...              print "ff: MSG"
#   ff_die MSG...              print "ff: FAIL: MSG" (stderr) and exit 1
#   ff_run CMD...              print (stderr) and run CMD, ff_die if it fails
#   ff_ready [TAG]             print "FERROFAB-GUEST-READY[ TAG]" (host: ff_wait_for_log)
#   ff_wait_release PORT [SEC] block until the host connects to guest TCP PORT
#                              (host: ff_release_guest HOSTPORT), or SEC pass
# nvmet (kernel target) through configfs
#   ff_nvmet_subsys NQN [HOSTNQN]            subsystem; any host unless HOSTNQN
#   ff_nvmet_ns NQN NSID PATH [BUFFERED]     namespace on a file/block device and
#                                            enable it; BUFFERED=1 (default for
#                                            regular files) sets buffered_io
#   ff_nvmet_port PORTID ADDR SVCID [TRTYPE] port (default tcp, ipv4)
#   ff_nvmet_link PORTID NQN                 expose the subsystem on the port
#   ff_nvmet_clear                           remove every port, subsystem, host
# nvme host through /dev/nvme-fabrics
#   ff_nvme_connect OPTS       write "OPTS" (e.g. transport=tcp,traddr=...,
#                              trsvcid=...,nqn=...) to /dev/nvme-fabrics;
#                              prints the controller name (nvme0)
#   ff_nvme_disconnect CTRL    delete controller CTRL (e.g. nvme0)
#   ff_nvme_wait_ns CTRL [SEC] wait for CTRL's first namespace block device,
#                              print its /dev path
#   ff_nvme_disconnect_all     delete every fabrics controller

FF_NVMET=/sys/kernel/config/nvmet

ff_log() { echo "ff: $*"; }
ff_die() { echo "ff: FAIL: $*" >&2; exit 1; }
ff_run() {
    echo "ff: + $*" >&2
    "$@" || ff_die "command failed (exit $?): $*"
}
ff_ready() { echo "FERROFAB-GUEST-READY${1:+ $1}"; }

ff_wait_release() {
    # busybox nc -l serves one connection. The answer line tells the host the
    # guest really got it (slirp accepts host connections even when nothing
    # listens in the guest yet, then resets them).
    _port=$1 _sec=${2:-0}
    if [ "$_sec" -gt 0 ]; then
        timeout "$_sec" nc -l -p "$_port" -e echo ferrofab-released >/dev/null 2>&1 </dev/null \
            || ff_die "no release from the host on port $_port within ${_sec}s"
    else
        nc -l -p "$_port" -e echo ferrofab-released >/dev/null 2>&1 </dev/null \
            || ff_die "nc -l -p $_port failed"
    fi
}

ff__write() { # FILE VALUE
    printf '%s\n' "$2" >"$1" || ff_die "cannot write '$2' to $1"
}

ff_nvmet_subsys() {
    _s=$FF_NVMET/subsystems/$1
    [ -d "$FF_NVMET" ] || ff_die "$FF_NVMET missing (nvmet not loaded or configfs not mounted)"
    mkdir -p "$_s" || ff_die "cannot create subsystem $1"
    if [ -n "${2:-}" ]; then
        mkdir -p "$FF_NVMET/hosts/$2" || ff_die "cannot create host $2"
        ff__write "$_s/attr_allow_any_host" 0
        ln -s "$FF_NVMET/hosts/$2" "$_s/allowed_hosts/$2" || ff_die "cannot allow host $2"
    else
        ff__write "$_s/attr_allow_any_host" 1
    fi
}

ff_nvmet_ns() {
    _n=$FF_NVMET/subsystems/$1/namespaces/$2
    mkdir -p "$_n" || ff_die "cannot create namespace $2 of $1"
    ff__write "$_n/device_path" "$3"
    _b=${4:-}
    if [ -z "$_b" ]; then
        if [ -b "$3" ]; then _b=0; else _b=1; fi
    fi
    # tmpfs has no O_DIRECT: without buffered_io enable fails with EINVAL.
    ff__write "$_n/buffered_io" "$_b"
    ff__write "$_n/enable" 1
}

ff_nvmet_port() {
    _p=$FF_NVMET/ports/$1
    mkdir -p "$_p" || ff_die "cannot create port $1"
    ff__write "$_p/addr_trtype" "${4:-tcp}"
    ff__write "$_p/addr_adrfam" ipv4
    ff__write "$_p/addr_traddr" "$2"
    ff__write "$_p/addr_trsvcid" "$3"
}

ff_nvmet_link() {
    ln -s "$FF_NVMET/subsystems/$2" "$FF_NVMET/ports/$1/subsystems/$2" \
        || ff_die "cannot link subsystem $2 to port $1"
}

ff_nvmet_clear() {
    [ -d "$FF_NVMET" ] || return 0
    for _l in "$FF_NVMET"/ports/*/subsystems/*; do [ -L "$_l" ] && rm -f "$_l"; done
    for _p in "$FF_NVMET"/ports/*; do [ -d "$_p" ] && rmdir "$_p"; done
    for _s in "$FF_NVMET"/subsystems/*; do
        [ -d "$_s" ] || continue
        for _l in "$_s"/allowed_hosts/*; do [ -L "$_l" ] && rm -f "$_l"; done
        for _n in "$_s"/namespaces/*; do
            [ -d "$_n" ] || continue
            echo 0 >"$_n/enable"
            rmdir "$_n"
        done
        rmdir "$_s"
    done
    for _h in "$FF_NVMET"/hosts/*; do [ -d "$_h" ] && rmdir "$_h"; done
    return 0
}

ff_nvme_connect() {
    [ -c /dev/nvme-fabrics ] || ff_die "/dev/nvme-fabrics missing (nvme_fabrics not loaded?)"
    # The same open file must be written and then read back: the kernel
    # answers with "instance=N,cntlid=M".
    _out=$( { printf '%s' "$1" >&3 && cat <&3; } 3<>/dev/nvme-fabrics 2>&1 ) \
        || ff_die "connect '$1' failed: $_out"
    _inst=$(printf '%s\n' "$_out" | sed -n 's/.*instance=\([0-9]*\).*/\1/p')
    [ -n "$_inst" ] || ff_die "connect '$1': unexpected answer '$_out'"
    echo "nvme$_inst"
}

ff_nvme_disconnect() {
    [ -e "/sys/class/nvme/$1/delete_controller" ] || ff_die "no controller $1"
    echo 1 >"/sys/class/nvme/$1/delete_controller" || ff_die "cannot delete $1"
}

ff_nvme_disconnect_all() {
    for _c in /sys/class/nvme/nvme*; do
        [ -e "$_c/delete_controller" ] && echo 1 >"$_c/delete_controller"
    done
    return 0
}

ff_nvme_wait_ns() {
    _c=$1 _sec=${2:-30} _i=0
    while :; do
        for _d in /sys/class/nvme/"$_c"/nvme*n*; do
            [ -e "$_d" ] || continue
            _b=${_d##*/}
            # With native multipath the block device is nvmeXnY (subsystem
            # instance), the per-path node nvmeXcYnZ is hidden.
            if [ -b "/dev/$_b" ]; then echo "/dev/$_b"; return 0; fi
            _h=$(echo "$_b" | sed 's/^nvme\([0-9]*\)c[0-9]*n\([0-9]*\)$/nvme\1n\2/')
            if [ -b "/dev/$_h" ]; then echo "/dev/$_h"; return 0; fi
        done
        _i=$((_i + 1))
        [ "$_i" -le $((_sec * 10)) ] || ff_die "no namespace block device for $_c after ${_sec}s"
        sleep 0.1
    done
}
