/* Compiled by build.rs (feature `ucx`) against the installed UCX headers.
 * Records what the C compiler makes of every struct, field and constant that
 * the hand-written declarations in sys.rs rely on; the Rust test
 * `layout_matches_headers` compares them one by one. */
#include <stddef.h>
#include <stdint.h>
#include <ucp/api/ucp.h>

/* Facts sys.rs writes as types rather than numbers. */
_Static_assert((ucs_status_t)-1 < 0, "ucs_status_t is signed");

typedef struct {
    const char *name;
    uint64_t value;
} unimem_ucx_layout_entry;

#define SIZE(t) {"sizeof " #t, sizeof(t)}, {"alignof " #t, _Alignof(t)}
#define FIELD(t, f) {#t "." #f, offsetof(t, f)}
#define CONSTANT(k) {#k, (uint64_t)(int64_t)(k)}

const unimem_ucx_layout_entry unimem_ucx_layout[] = {
    SIZE(ucp_params_t),
    FIELD(ucp_params_t, field_mask),
    FIELD(ucp_params_t, features),
    FIELD(ucp_params_t, request_size),
    FIELD(ucp_params_t, request_init),
    FIELD(ucp_params_t, request_cleanup),
    FIELD(ucp_params_t, tag_sender_mask),
    FIELD(ucp_params_t, mt_workers_shared),
    FIELD(ucp_params_t, estimated_num_eps),
    FIELD(ucp_params_t, estimated_num_ppn),
    FIELD(ucp_params_t, name),

    SIZE(ucs_cpu_set_t),
    FIELD(ucs_cpu_set_t, ucs_bits),

    SIZE(ucp_worker_params_t),
    FIELD(ucp_worker_params_t, field_mask),
    FIELD(ucp_worker_params_t, thread_mode),
    FIELD(ucp_worker_params_t, cpu_mask),
    FIELD(ucp_worker_params_t, events),
    FIELD(ucp_worker_params_t, user_data),
    FIELD(ucp_worker_params_t, event_fd),
    FIELD(ucp_worker_params_t, flags),
    FIELD(ucp_worker_params_t, name),
    FIELD(ucp_worker_params_t, am_alignment),
    FIELD(ucp_worker_params_t, client_id),

    SIZE(ucp_err_handler_t),
    FIELD(ucp_err_handler_t, cb),
    FIELD(ucp_err_handler_t, arg),

    SIZE(ucs_sock_addr_t),
    FIELD(ucs_sock_addr_t, addr),
    FIELD(ucs_sock_addr_t, addrlen),

    SIZE(ucp_ep_params_t),
    FIELD(ucp_ep_params_t, field_mask),
    FIELD(ucp_ep_params_t, address),
    FIELD(ucp_ep_params_t, err_mode),
    FIELD(ucp_ep_params_t, err_handler),
    FIELD(ucp_ep_params_t, user_data),
    FIELD(ucp_ep_params_t, flags),
    FIELD(ucp_ep_params_t, sockaddr),
    FIELD(ucp_ep_params_t, conn_request),
    FIELD(ucp_ep_params_t, name),
    FIELD(ucp_ep_params_t, local_sockaddr),

    SIZE(ucp_mem_map_params_t),
    FIELD(ucp_mem_map_params_t, field_mask),
    FIELD(ucp_mem_map_params_t, address),
    FIELD(ucp_mem_map_params_t, length),
    FIELD(ucp_mem_map_params_t, flags),
    FIELD(ucp_mem_map_params_t, prot),
    FIELD(ucp_mem_map_params_t, memory_type),

    SIZE(ucp_request_param_t),
    FIELD(ucp_request_param_t, op_attr_mask),
    FIELD(ucp_request_param_t, flags),
    FIELD(ucp_request_param_t, request),
    FIELD(ucp_request_param_t, cb),
    FIELD(ucp_request_param_t, datatype),
    FIELD(ucp_request_param_t, user_data),
    FIELD(ucp_request_param_t, reply_buffer),
    FIELD(ucp_request_param_t, memory_type),
    FIELD(ucp_request_param_t, recv_info),
    FIELD(ucp_request_param_t, memh),

    CONSTANT(UCS_OK),
    CONSTANT(UCS_INPROGRESS),
    CONSTANT(UCS_ERR_UNREACHABLE),
    CONSTANT(UCS_ERR_LAST),
    CONSTANT(UCP_API_MAJOR),
    CONSTANT(UCP_API_MINOR),
    CONSTANT(UCP_PARAM_FIELD_FEATURES),
    CONSTANT(UCP_PARAM_FIELD_MT_WORKERS_SHARED),
    CONSTANT(UCP_PARAM_FIELD_NAME),
    CONSTANT(UCP_FEATURE_RMA),
    CONSTANT(UCS_THREAD_MODE_SERIALIZED),
    CONSTANT(UCP_WORKER_PARAM_FIELD_THREAD_MODE),
    CONSTANT(UCP_ERR_HANDLING_MODE_NONE),
    CONSTANT(UCP_ERR_HANDLING_MODE_PEER),
    CONSTANT(UCP_EP_PARAM_FIELD_REMOTE_ADDRESS),
    CONSTANT(UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE),
    CONSTANT(UCP_EP_PARAM_FIELD_ERR_HANDLER),
    CONSTANT(UCP_EP_PARAM_FIELD_NAME),
    CONSTANT(UCP_EP_CLOSE_FLAG_FORCE),
    CONSTANT(UCS_MEMORY_TYPE_HOST),
    CONSTANT(UCP_MEM_MAP_PARAM_FIELD_ADDRESS),
    CONSTANT(UCP_MEM_MAP_PARAM_FIELD_LENGTH),
    CONSTANT(UCP_MEM_MAP_PARAM_FIELD_FLAGS),
    CONSTANT(UCP_MEM_MAP_PARAM_FIELD_PROT),
    CONSTANT(UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE),
    CONSTANT(UCP_MEM_MAP_PROT_LOCAL_READ),
    CONSTANT(UCP_MEM_MAP_PROT_LOCAL_WRITE),
    CONSTANT(UCP_MEM_MAP_PROT_REMOTE_READ),
    CONSTANT(UCP_MEM_MAP_PROT_REMOTE_WRITE),
    CONSTANT(UCP_OP_ATTR_FIELD_FLAGS),
    CONSTANT(UCP_OP_ATTR_FIELD_MEMH),

    {"sizeof ucs_status_t", sizeof(ucs_status_t)},
    {"sizeof ucs_memory_type_t", sizeof(ucs_memory_type_t)},
    {"sizeof ucs_thread_mode_t", sizeof(ucs_thread_mode_t)},
    {"sizeof ucp_err_handling_mode_t", sizeof(ucp_err_handling_mode_t)},
    {"sizeof ucp_datatype_t", sizeof(ucp_datatype_t)},
};

const size_t unimem_ucx_layout_len =
    sizeof(unimem_ucx_layout) / sizeof(unimem_ucx_layout[0]);
