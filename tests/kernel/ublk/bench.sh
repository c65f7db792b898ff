# Sourced by ublk/guest.sh when BENCH=1 (tests/suites/bench_ublk.sh ->
# tests/kernel/ublk.sh --bench): the same namespace driven three ways in
# one boot, each job back to back per round:
#   bench  `ferrofab-nvmeof bench` (the initiator alone)
#   ublk   fio on /dev/ublkb0 (connect --expose-block)
#   fuse   fio on the FUSE file (connect, default exposure)
# fio: O_DIRECT, libaio. Jobs: 1 MiB sequential write and read at QD4,
# 4 KiB random read at QD32. Under TCG every absolute figure is far below
# real hardware and the guest's 2 vCPUs run the target too: quote ratios.
# Lines "BENCH round=R job=J side=S kib_s=K iops=I" go to the console.
# BLOCK_ARGS: extra `connect --expose-block` options (e.g. --block-queues 2).
RT=${BENCH_TIME:-6}
ROUNDS=${BENCH_ROUNDS:-2}
modprobe fuse || ff_die "modprobe fuse"
start_target

JOBS="write-1m-qd4 read-1m-qd4 randread-4k-qd32"
# job_args fio|bench JOB: the job's options for fio or for `bench`.
job_args() {
    case $2 in
        write-1m-qd4) set -- "$1" write 1M 4;;
        read-1m-qd4) set -- "$1" read 1M 4;;
        randread-4k-qd32) set -- "$1" randread 4k 32;;
    esac
    if [ "$1" = fio ]; then
        echo "--rw=$2 --bs=$3 --iodepth=$4"
    else
        echo "--pattern $2 --bs $(echo "$3" | sed 's/4k/4096/') --qd $4"
    fi
}

# run_fio FILE JOB: prints "KiB/s IOPS"
run_fio() {
    # shellcheck disable=SC2046
    out=$(fio --name=ff --filename="$1" --direct=1 --ioengine=libaio --time_based \
        --runtime=$RT --size=${SIZE_MIB}M --output-format=terse --terse-version=3 \
        $(job_args fio "$2") 2>$T/fio.err) || ff_die "fio $2 on $1: $(cat $T/fio.err)"
    case $2 in
        write*) echo "$out" | cut -d';' -f48,49 | tr ';' ' ';;
        *) echo "$out" | cut -d';' -f7,8 | tr ';' ' ';;
    esac
}

run_bench() {
    # shellcheck disable=SC2046
    $B bench -a 127.0.0.1 -s 4420 -n $NQN $(job_args bench "$1") --time ${RT}s \
        --region ${SIZE_MIB}MiB --json >$T/bench.json 2>$T/bench.err \
        || ff_die "bench $1: $(tail -3 $T/bench.err)"
    mb=$(grep '"mb_per_s"' $T/bench.json | tail -1 | tr -dc '0-9.')
    ops=$(grep '"ops_per_s"' $T/bench.json | tail -1 | tr -dc '0-9.')
    awk -v mb="$mb" -v ops="$ops" 'BEGIN { printf "%.0f %.0f\n", mb * 1e6 / 1024, ops }'
}

# connect_fuse: the default exposure, a file in $T/vol; sets CPID and FILE.
connect_fuse() {
    : >$T/conn.out
    $B connect -a 127.0.0.1 -s 4420 -n $NQN --run-dir $T/run --expose-dir $T/vol \
        >$T/conn.out 2>>$T/conn.log &
    CPID=$!
    i=0
    while ! grep -q "exposed at" $T/conn.out; do
        i=$((i + 1)); [ $i -gt 600 ] && ff_die "connect (FUSE) printed no file"
        sleep 0.1
    done
    FILE=$(sed -n 's/.*exposed at \([^ ]*\) .*/\1/p' $T/conn.out | head -1)
}

r=1
while [ $r -le $ROUNDS ]; do
    for job in $JOBS; do
        set -- $(run_bench $job)
        echo "BENCH round=$r job=$job side=bench kib_s=$1 iops=$2"
        # shellcheck disable=SC2086
        connect_block ${BLOCK_ARGS:-}
        [ $r = 1 ] && [ $job = write-1m-qd4 ] &&
            ff_log "ublk side: $(ls /sys/block/${DEV#/dev/}/mq | wc -l) hardware queue(s), options: ${BLOCK_ARGS:-none}"
        set -- $(run_fio "$DEV" $job)
        echo "BENCH round=$r job=$job side=ublk kib_s=$1 iops=$2"
        disconnect
        connect_fuse
        set -- $(run_fio "$FILE" $job)
        echo "BENCH round=$r job=$job side=fuse kib_s=$1 iops=$2"
        disconnect
    done
    r=$((r + 1))
done
ff_log "PASS: bench comparison done ($ROUNDS rounds)"
