// out[i] = i * 2 + 1 over the whole bound range of binding 0.
@group(0) @binding(0) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < arrayLength(&dst)) {
        dst[i] = i * 2u + 1u;
    }
}
