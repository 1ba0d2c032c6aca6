#!/bin/sh
# Time `RUNTIME run` of /bin/true in a busybox bundle for capsule, crun and runc, side by side in
# alternating rounds (bench/alternate.py), and print the medians and the ratios capsule/crun and
# capsule/runc.
#
# usage (root): bench/container_run.sh            RUNS=40 WARMUP=5 CAPSULE=build/capsule by default
#   BASE=DIR/capsule   also times that capsule build (as capsule-base), alternating with the others
#   CGROUPS=hybrid     keeps a hybrid host's unified hierarchy (crun 1.8 refuses it and is left out)
#   PAUSE=0.3          idles that many seconds before each run (untimed): a cgroup move right after
#                      another skips the RCU grace period the first one waited for, so back-to-back
#                      runs hide what a lone create pays
#
# crun 1.8 refuses hybrid cgroups, so by default (CGROUPS=v1) the whole benchmark runs in a private
# mount namespace with /sys/fs/cgroup/unified unmounted; every runtime runs under those same conditions. Each runtime has its
# own --root and bundle (same rootfs, same config apart from cgroupsPath); the container cgroups go below
# this process's own memory cgroup and are removed at the end, with whatever the runtimes left behind.
set -eu

RUNS=${RUNS:-40}
WARMUP=${WARMUP:-5}
PAUSE=${PAUSE:-0}
repo=$(cd "$(dirname "$0")/.." && pwd)
CAPSULE=$(realpath "${CAPSULE:-$repo/build/capsule}")
CGROUPS=${CGROUPS:-v1}
RUNTIMES="capsule crun runc"
case $CGROUPS in
v1) ;;
hybrid)
        RUNTIMES="capsule runc"
        echo "container_run: CGROUPS=hybrid: crun 1.8 refuses hybrid cgroups and is left out" >&2 ;;
*) echo "container_run: CGROUPS is v1 or hybrid, not \`$CGROUPS\`" >&2; exit 1 ;;
esac
if [ -n "${BASE:-}" ]; then
        BASE=$(realpath "$BASE")
        [ -x "$BASE" ] || { echo "container_run: BASE $BASE is missing" >&2; exit 1; }
        RUNTIMES="$RUNTIMES capsule-base"
fi

for tool in crun runc unshare python3; do
        command -v "$tool" >/dev/null || { echo "container_run: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done
[ -x "$CAPSULE" ] || { echo "container_run: $CAPSULE is missing: make -C $repo" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "container_run: needs root" >&2; exit 1; }

work=$(mktemp -d /tmp/capsule-bench.XXXXXX)
memcg=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
cgparent="${memcg%/}/capsule-bench-$$"
# The file system type follows the "-" after the optional fields.
hierarchies=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") break; if ($(i + 1) ~ /^cgroup2?$/) print $5 }' \
        /proc/self/mountinfo | grep '^/sys/fs/cgroup/' | sort -u)

binary() {
        case $1 in
        capsule) echo "$work/capsule" ;;
        capsule-base) echo "$work/capsule-base" ;;
        *) command -v "$1" ;;
        esac
}

# Ancestors of $cgparent missing now, in any hierarchy: created by the runtimes, removed at the end.
created=""
prefix=""
for part in $(echo "$cgparent" | tr / ' '); do
        prefix="$prefix/$part"
        for h in $hierarchies; do
                [ -d "$h$prefix" ] || created="$h$prefix $created"
        done
done

# The parent cgroup exists before the runs, as a pod's or a slice's does in a real deployment, so each
# runtime creates and removes only its own leaf (capsule removes an empty parent it created itself,
# crun and runc keep it: without this, capsule would pay a mkdir and rmdir per hierarchy more).
# A new v1 cpuset starts with no CPUs or memory nodes: it gets its parent's.
precreate_parent() {
        for h in $hierarchies; do
                prefix=""
                for part in $(echo "$cgparent" | tr / ' '); do
                        parent="$h$prefix"
                        prefix="$prefix/$part"
                        [ -d "$h$prefix" ] || mkdir "$h$prefix"
                        for f in cpuset.cpus cpuset.mems; do
                                if [ -f "$h$prefix/$f" ] && [ -z "$(cat "$h$prefix/$f")" ]; then
                                        cat "$parent/$f" >"$h$prefix/$f"
                                fi
                        done
                done
        done
}

cleanup() {
        rm -rf "$work"
        for h in $hierarchies; do
                if [ -d "$h$cgparent" ]; then find "$h$cgparent" -depth -type d -exec rmdir {} + 2>/dev/null || :; fi
        done
        for d in $created; do  # deepest first
                if [ -d "$d" ]; then rmdir "$d" 2>/dev/null || :; fi
        done
        return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
precreate_parent

# A private copy: a rebuild of build/capsule during the run must not make runs fail.
cp "$CAPSULE" "$work/capsule"
if [ -n "${BASE:-}" ]; then cp "$BASE" "$work/capsule-base"; fi

# The rootfs: busybox-static and its applets.
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" "$rootfs/tmp" "$rootfs/etc"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
        [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"

# runc's default spec, neutral ground for the three, with /bin/true and no terminal. Its ambient
# capabilities are dropped: without inheritable ones they cannot be raised; runc and crun skip them
# silently, capsule refuses the config.
mkdir "$work/spec"
runc spec --bundle "$work/spec"
for rt in $RUNTIMES; do
        mkdir "$work/bundle-$rt"
        python3 - "$work/spec/config.json" "$work/bundle-$rt/config.json" "$rootfs" "$cgparent/$rt" <<'EOF'
import json, sys
src, dst, rootfs, cgroup = sys.argv[1:]
with open(src) as f:
        c = json.load(f)
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["process"]["capabilities"].pop("ambient", None)
c["root"]["path"] = rootfs
c["linux"]["cgroupsPath"] = cgroup
with open(dst, "w") as f:
        json.dump(c, f, indent=2)
EOF
done

mkdir "$work/state"
set --
for rt in $RUNTIMES; do
        set -- "$@" "$rt=$(binary "$rt") --root $work/state/$rt run --bundle $work/bundle-$rt bench-$rt"
done

echo "container_run: $RUNS runs of /bin/true per runtime ($WARMUP warm-up, $PAUSE s apart), cgroups $CGROUPS, capsule=$CAPSULE${BASE:+, capsule-base=$BASE}"
# Same conditions for all: a private mount namespace without the cgroup2 hierarchy, and the state
# directories on a tmpfs, as /run is (on ext4, allocating inodes next to just-deleted ones costs more than
# some runtimes' whole setup). mount -n: no /run/mount/utab on the host. Whatever a failed run left
# behind is deleted before the namespace goes.
# shellcheck disable=SC2016
unshare -m sh -c '
        work=$1 runtimes=$2 cgroups=$3
        shift 3
        mount -n --make-rprivate / || exit 1
        if [ "$cgroups" = v1 ]; then umount -n /sys/fs/cgroup/unified || exit 1; fi
        mount -n -t tmpfs -o mode=0700 bench-state "$work/state" || exit 1
        python3 "$@"
        status=$?
        for rt in $runtimes; do
                bin=$rt
                case $rt in capsule*) bin=$work/$rt ;; esac
                "$bin" --root "$work/state/$rt" delete --force "bench-$rt" >/dev/null 2>&1
        done
        exit $status' sh "$work" "$RUNTIMES" "$CGROUPS" \
        "$repo/bench/alternate.py" "$RUNS" "$WARMUP" "$PAUSE" "$work/result.json" "$@"

python3 - "$work/result.json" <<'EOF'
import json, statistics, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
for r in res.values():
        t = r["times"]
        r.update(median=statistics.median(t), mean=statistics.mean(t), stddev=statistics.pstdev(t), min=min(t))
print("\nmedians (ms):")
for name, r in res.items():
        print(f"  {name:12s} median {r['median'] * 1e3:7.2f}   mean {r['mean'] * 1e3:7.2f} ± {r['stddev'] * 1e3:5.2f}"
              f"   min {r['min'] * 1e3:7.2f}")
cap = res["capsule"]["median"]
for other in res:
        if other != "capsule":
                print(f"  capsule/{other}: {cap / res[other]['median']:.2f}")
EOF
