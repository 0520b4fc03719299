#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, without systemd (CI containers, a laptop).
#
#   .ci/slurm.sh start    install Debian's slurmctld/slurmd/slurm-client/munge if missing, write
#                         /etc/slurm/slurm.conf for this one node, start munged, slurmctld and
#                         slurmd, and wait until the node is idle
#   .ci/slurm.sh stop     stop the three daemons by their pid files
#   .ci/slurm.sh status   sinfo + squeue
#
# Needs root (apt-get, daemons). The node advertises SSLBENCH_SLURM_GPUS (default 1) stand-in
# GPUs: a gpu GRES whose device files are links to /dev/null (slurmd ignores a GPU without a
# device file). A job asking for --gpus=1 is scheduled like on a GPU cluster (one at a time with
# the default) and runs on the CPU. Accounting (slurmdbd) is deliberately absent: `sacct` fails
# here, which is why profiles/slurm/profile.yaml polls job states with squeue.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# written by sslbench .ci/slurm.sh"
PIDS=(/run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid)

log() { echo "slurm.sh: $*" >&2; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        log "$CONF exists and was not written by this script; refusing to overwrite it"
        exit 1
    fi
    local host cpus mem gpus
    host=$(hostname -s)
    cpus=$(nproc)
    # leave 1 GiB to the operating system and the daemons
    mem=$(( $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    gpus=${SSLBENCH_SLURM_GPUS:-1}
    mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
    cat >"$CONF" <<CONF
$MARK: one node, no systemd, no accounting daemon
ClusterName=sslbench
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# no slurmdbd: sacct cannot answer (the workflow profile polls with squeue)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# finished jobs stay visible to squeue/scontrol for an hour (far above the status poll interval)
MinJobAge=3600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$gpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    # slurmd drops a GPU without a character device file: links to /dev/null stand in
    mkdir -p /run/sslbench-gpus
    for i in $(seq 0 $((gpus - 1))); do ln -sfn /dev/null "/run/sslbench-gpus/gpu$i"; done
    cat >"$GRES_CONF" <<CONF
$MARK: stand-in GPUs (no devices behind them)
NodeName=$host Name=gpu File=/run/sslbench-gpus/gpu[0-$((gpus - 1))]
CONF
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    install
    write_conf
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [ -s /etc/munge/munge.key ] || mungekey --create
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    for pid in "${PIDS[@]}"; do
        alive "$pid" || rm -f "$pid"  # stale pid files from a killed container
    done
    alive /run/munge/munged.pid || runuser -u munge -- munged
    alive /run/slurmctld.pid || slurmctld
    alive /run/slurmd.pid || slurmd
    local state=""
    for _ in $(seq 60); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        case "$state" in
            idle)
                log "node $(hostname -s) idle: $(sinfo -h -o '%c CPUs, %m MB, %G')"
                return ;;
            drain* | down* | inval*)  # left over from an earlier start with another config
                scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 1
    done
    log "node not idle after 60 s (state: '${state}'); logs in /var/log/slurm"
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
}

stop() {
    local pid
    for pid in "${PIDS[@]}"; do
        if alive "$pid"; then
            local p
            p=$(cat "$pid")
            kill "$p"
            for _ in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$p" 2>/dev/null && kill -9 "$p"
        fi
        rm -f "$pid"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo; squeue ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
