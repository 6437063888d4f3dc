#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs one workload on every wall moat has,
# printing what the container sees and a side-by-side table.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --release --workspace
# The vm backend's guest: kernel, static moat-agent, initramfs (cached; minutes on first use).
cargo run --release -q -p moat-artifacts --example build-guest >/dev/null

# moat's cache (as scripts/deps.sh finds it): the rig must be able to write images into it.
cache=${MOAT_CACHE_DIR:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/moat}}
cache=${cache:-${HOME:+$HOME/.cache/moat}}
cache=${cache:-/var/cache/moat}
mkdir -p "$cache"
moat=$PWD/target/release/moat
rig=$PWD/target/release/moat-rig

# ---- The workload: what the container sees -------------------------------------------------------
workload='
echo "pid:      $$"
echo "hostname: $(hostname)"
echo "kernel:   $(uname -r)"
echo "caps:     $(grep CapEff /proc/self/status | cut -f2)"
mem=$(cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null | head -n1)
echo "memory:   ${mem:-not visible}"
pids=$(cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null | head -n1)
echo "pids:     ${pids:-not visible}"
if cat /etc/passwd >/dev/null 2>&1; then echo "passwd:   readable"; else echo "passwd:   denied"; fi
'
policy=$(mktemp)
trap 'rm -f "$policy"' EXIT
printf '[[paths]]\npath = "/etc/passwd"\nallow = []\n' >"$policy"

# run BACKEND: prints the workload's view and records "backend|wall time|kernel|secret".
rows=()
run() {
	local backend=$1 prefix=() extra=()
	case $backend in
	trace) extra=(--policy "$policy") ;;
	vm)
		if ! "$moat" check --backend vm >/dev/null; then
			echo "(vm: $("$moat" check --backend vm | head -n1 | cut -d: -f2-); running it inside the KVM rig)"
			prefix=("$rig" run --rw "$cache" --)
		fi
		;;
	esac
	echo "== moat run --backend $backend"
	local out start end
	start=$(date +%s%N)
	out=$("${prefix[@]}" "$moat" run --backend "$backend" "${extra[@]}" --memory 64M --pids-limit 100 \
		-- sh -c "$workload" 2>&1) || true
	end=$(date +%s%N)
	echo "$out"
	local kernel secret
	kernel=$(sed -n 's/^kernel: *//p' <<<"$out")
	secret=$(sed -n 's/^passwd: *//p' <<<"$out")
	rows+=("$backend|$(((end - start) / 1000000)) ms|${kernel:-?}|${secret:-?}")
}

echo "host kernel: $(uname -r)"
for b in ns trace vm; do
	run "$b"
	echo
done

# ---- The table -----------------------------------------------------------------------------------
echo "| backend | moat run, whole life | kernel | /etc/passwd (the trace policy denies it) |"
echo "|---|---:|---|---|"
for r in "${rows[@]}"; do
	IFS='|' read -r b t k s <<<"$r"
	echo "| $b | $t | $k | $s |"
done
echo
echo "vm rows measured inside the KVM rig (nested, 16-20x slower) are not comparable with the others."

# ---- The comparison: moat bench --quick ----------------------------------------------------------
# runc, crun, ns, trace, vm and QEMU side by side (vm and QEMU in the KVM rig on PVM hosts): start
# latency, syscall cost, file I/O, memory, density, VM boot and the isolation matrix. The tables
# print here; results.json, results.md and the SVG plots stay in $out.
out=${MOAT_BENCH_OUT:-$PWD/moat-bench}
echo
echo "== moat bench --quick (a few minutes; results in $out)"
"$moat" bench --quick --out "$out"
