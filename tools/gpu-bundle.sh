#!/usr/bin/env bash
# Builds unimem's GPU checks into one folder that runs on a Linux x86-64
# machine with an NVIDIA driver and no Rust toolchain:
#
#   bash tools/gpu-bundle.sh [folder]      # here, where cargo is (default target/gpu-bundle)
#   folder/run.sh                          # there; prints every result and the bench tables
#
# The folder holds, built in release mode and stripped: the CUDA, Vulkan,
# NUMA, wgpu and load test binaries, the cuda_zero_copy and load_model
# examples, the CUDA bench (which prints the GPU's NUMA node, and near and
# far copy bandwidth where the machine has two nodes), the load bench (a
# checkpoint from a file into a registered Tape and on to device memory,
# cold and warm, beside the same run's storage, memcpy and host-to-device
# ceilings), the CPU benches that want many cores (scaling, and workloads
# where it exists), the Vulkan loader of this machine (used there only if
# the system has none) and run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/gpu-bundle}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/gpu-build}"
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
export CARGO_PROFILE_BENCH_DEBUG=false CARGO_PROFILE_BENCH_STRIP=symbols
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"

# Cargo's JSON messages name each built executable; keep the ones asked for.
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message.get("executable"):
        print(message["target"]["name"], message["executable"])
'
}

copy() { # kind: prefix for the file name; then "name path" lines on stdin
    while read -r name path; do
        cp "$path" "$out/bin/$1-$name"
        echo "  bin/$1-$name"
    done
}

echo "building into $out (target folder $CARGO_TARGET_DIR)"
cargo test --release --features cuda,vulkan,wgpu,load --test cuda --test vulkan --test numa --test wgpu --test load --no-run \
    --message-format=json | executables | copy test
cargo build --release --features cuda,load --example cuda_zero_copy --example load_model \
    --message-format=json | executables | copy example
benches="--bench cuda --bench scaling"
if [ -f benches/workloads.rs ]; then
    benches="$benches --bench workloads"
fi
# shellcheck disable=SC2086 # the bench list splits on purpose
cargo bench -p unimem-benches --features cuda $benches --no-run \
    --message-format=json | executables | copy bench
cargo bench -p unimem-benches --features cuda,load --bench load --no-run \
    --message-format=json | executables | copy bench

loader=$(ldconfig -p 2>/dev/null | awk '/libvulkan\.so\.1 .*x86-64/ { print $NF; exit }')
if [ -n "$loader" ]; then
    cp -L "$loader" "$out/lib/libvulkan.so.1"
    echo "  lib/libvulkan.so.1 (from $loader)"
else
    echo "  no Vulkan loader here to carry (install libvulkan1): the machine there must have one"
fi

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs unimem's GPU checks on this machine and prints every result; the exit
# status is the number of steps that failed. No Rust toolchain is needed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
failed=0
step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
check() { # name, then the command
    local name=$1 status=0
    shift
    timeout "${STEP_SECONDS:-300}" "$@" || status=$?
    if [ "$status" -eq 0 ]; then
        echo "-- $name: ok"
    else
        echo "-- $name: FAILED (exit $status)"
        failed=$((failed + 1))
    fi
}

step "machine"
uname -srm
nproc
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv
echo "NUMA nodes online: $(cat /sys/devices/system/node/online 2>/dev/null || echo none shown), with memory: $(cat /sys/devices/system/node/has_memory 2>/dev/null || echo none shown)"

# The Vulkan loader: the system's, else the one carried in lib/.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
    export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "no system Vulkan loader: using lib/libvulkan.so.1"
fi
# NVIDIA's Vulkan driver alone (not a software driver beside it): its
# manifest where the loader looks, else where container runtimes put it.
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
    for manifest in /etc/vulkan/icd.d/nvidia*.json /usr/share/vulkan/icd.d/nvidia*.json \
        /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json; do
        if [ -f "$manifest" ]; then
            export VK_DRIVER_FILES="$manifest" VK_ICD_FILENAMES="$manifest"
            echo "Vulkan driver manifest: $manifest"
            break
        fi
    done
fi
# A missing driver or device fails the tests here instead of skipping them.
export UNIMEM_REQUIRE_CUDA=1 UNIMEM_REQUIRE_VULKAN=1

step "CUDA tests"
check "CUDA tests" bin/test-cuda --test-threads=1 --nocapture
step "Vulkan tests (each names the device it ran on)"
check "Vulkan tests" bin/test-vulkan --test-threads=1 --nocapture
# Placement on every node with memory (a machine of two shows the pages
# land on the node asked for); a container that forbids mbind reports the
# tests that need it ignored, with the reason.
step "NUMA tests"
check "NUMA tests" bin/test-numa --nocapture
step "wgpu tests (wgpu over the same Vulkan driver)"
check "wgpu tests" bin/test-wgpu --test-threads=1 --nocapture
step "example cuda_zero_copy"
check "cuda_zero_copy" bin/example-cuda_zero_copy
step "CUDA bench"
check "CUDA bench" bin/bench-cuda
# Files for the load steps go to a file system with direct I/O: this
# folder's, unless LOAD_DIR names another (not tmpfs).
load_dir=${LOAD_DIR:-$here/load}
mkdir -p "$load_dir"
step "load tests (direct I/O in $load_dir)"
check "load tests" env UNIMEM_LOAD_TEST_DIR="$load_dir" bin/test-load --test-threads=1
step "example load_model: a checkpoint into registered weights, then to the device"
check "load_model" bin/example-load_model --dir "$load_dir"
step "load bench: file -> registered Tape -> device, cold and warm, against the ceilings"
STEP_SECONDS=${LOAD_SECONDS:-900} check "load bench" bin/bench-load --dir "$load_dir" ${LOAD_ARGS:-}
if [ -z "${GPU_ONLY:-}" ]; then
    step "scaling bench ($(nproc) cores)"
    check "scaling bench" bin/bench-scaling
    if [ -x bin/bench-workloads ]; then
        step "workloads bench ($(nproc) cores)"
        STEP_SECONDS=${WORKLOADS_SECONDS:-420} check "workloads bench" bin/bench-workloads ${WORKLOADS_ARGS:---quick}
    fi
fi
step "done: $failed step(s) failed"
exit "$failed"
RUN
chmod +x "$out/run.sh" "$out"/bin/*
du -sh "$out"
echo "copy $out to the GPU machine and run $out/run.sh there"
