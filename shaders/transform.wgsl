// Reads src (written by the CPU), writes dst[i] = src[i] * 3 + 7 and adds
// every src[i] into total[0] atomically.
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<storage, read_write> total: array<atomic<u32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < arrayLength(&src)) {
        let v = src[i];
        dst[i] = v * 3u + 7u;
        atomicAdd(&total[0], v);
    }
}
