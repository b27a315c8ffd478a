/* engine/engine: internal accessors to an engine's parts, for tests, `kvx inspect` and the
 * planner (the public API is in include/kvx.h). */
#ifndef KVX_ENGINE_ENGINE_H
#define KVX_ENGINE_ENGINE_H

#include "kv/layout.h"
#include "kv/pool.h"
#include "kvx.h"

const struct kvx_kv_layout *kvx_engine_layout(const struct kvx_engine *e);
struct kvx_kv_pool *kvx_engine_pool(const struct kvx_engine *e);
/* The cache sequence of a session (borrowed; valid until the session is destroyed). */
struct kvx_kv_seq *kvx_engine_session_seq(const struct kvx_session *s);
/* True when the engine evicts (kv/evict.h): the session's pages are compacted in place, so
 * they must not be shared with another session (prefix sharing, fork). */
bool kvx_session_evicts(const struct kvx_session *s);

#endif
