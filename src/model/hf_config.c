/* model/hf_config: typed, range-checked reads of config.json keys (see hf_config.h). */
#include "model/hf_config.h"

#include <math.h>
#include <string.h>

#include "util/err.h"

static const struct kvx_jv *get(const struct kvx_jv *cfg, const char *key)
{
    const struct kvx_jv *v = kvx_jv_get(cfg, key);
    return v && v->type != KVX_JV_NULL ? v : NULL;
}

enum kvx_status kvx_hf_int(const struct kvx_jv *cfg, const char *key, bool required, int64_t def,
                           int64_t lo, int64_t hi, int64_t *out, struct kvx_err *err)
{
    const struct kvx_jv *v = get(cfg, key);
    if (!v) {
        if (required)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is missing", key);
        *out = def;
        return KVX_OK;
    }
    if (v->type != KVX_JV_NUMBER || !v->is_int)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is a %s, not an integer",
                           key, v->type == KVX_JV_NUMBER ? "fraction" : kvx_jv_type_name(v->type));
    if (v->i < lo || v->i > hi)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' = %lld is outside "
                           "%lld..%lld", key, (long long)v->i, (long long)lo, (long long)hi);
    *out = v->i;
    return KVX_OK;
}

enum kvx_status kvx_hf_pos_float(const struct kvx_jv *cfg, const char *key, double def,
                                 double *out, struct kvx_err *err)
{
    const struct kvx_jv *v = get(cfg, key);
    if (!v) {
        *out = def;
        return KVX_OK;
    }
    if (v->type != KVX_JV_NUMBER)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is a %s, not a number",
                           key, kvx_jv_type_name(v->type));
    if (!isfinite(v->num) || v->num <= 0.0)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' = %g is not a positive "
                           "number", key, v->num);
    *out = v->num;
    return KVX_OK;
}

enum kvx_status kvx_hf_bool(const struct kvx_jv *cfg, const char *key, bool def, bool *out,
                            struct kvx_err *err)
{
    const struct kvx_jv *v = get(cfg, key);
    if (!v) {
        *out = def;
        return KVX_OK;
    }
    if (v->type != KVX_JV_BOOL)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is a %s, not true/false",
                           key, kvx_jv_type_name(v->type));
    *out = v->b;
    return KVX_OK;
}

enum kvx_status kvx_hf_str(const struct kvx_jv *cfg, const char *key, const char *def,
                           const char **out, struct kvx_err *err)
{
    const struct kvx_jv *v = get(cfg, key);
    if (!v) {
        *out = def;
        return KVX_OK;
    }
    if (v->type != KVX_JV_STRING)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is a %s, not a string",
                           key, kvx_jv_type_name(v->type));
    *out = v->str;
    return KVX_OK;
}

enum kvx_status kvx_hf_token_id(const struct kvx_jv *cfg, const char *key, int32_t *out,
                                struct kvx_err *err)
{
    const struct kvx_jv *v = get(cfg, key);
    *out = -1;
    if (v && v->type == KVX_JV_ARRAY)
        v = v->len ? &v->items[0] : NULL;
    if (!v)
        return KVX_OK;
    if (v->type != KVX_JV_NUMBER || !v->is_int || v->i < 0 || v->i > INT32_MAX)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is not a token id", key);
    *out = (int32_t)v->i;
    return KVX_OK;
}

enum kvx_status kvx_hf_rope(const struct kvx_jv *cfg, int32_t head_dim, struct kvx_hf_rope *out,
                            struct kvx_err *err)
{
    /* 5.x: everything in rope_parameters; 4.x: rope_theta at the top, scaling in rope_scaling */
    const struct kvx_jv *rp = get(cfg, "rope_parameters");
    const char *where = "rope_parameters";
    if (!rp) {
        rp = get(cfg, "rope_scaling");
        where = "rope_scaling";
    }
    if (rp && rp->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is a %s, not an object",
                           where, kvx_jv_type_name(rp->type));
    double theta, factor = 1.0, partial;
    enum kvx_status st;
    if ((st = kvx_hf_pos_float(cfg, "rope_theta", 10000.0, &theta, err)) ||
        (st = kvx_hf_pos_float(rp, "rope_theta", theta, &theta, err)) ||
        (st = kvx_hf_pos_float(cfg, "partial_rotary_factor", 1.0, &partial, err)) ||
        (st = kvx_hf_pos_float(rp, "partial_rotary_factor", partial, &partial, err)))
        return st;
    const char *type = "default";
    if (rp && ((st = kvx_hf_str(rp, "type", type, &type, err)) ||
               (st = kvx_hf_str(rp, "rope_type", type, &type, err))))
        return kvx_err_prefix(err, "%s", where), st;
    if (strcmp(type, "linear") == 0) {
        if ((st = kvx_hf_pos_float(rp, "factor", 0.0, &factor, err)) != KVX_OK)
            return kvx_err_prefix(err, "%s", where), st;
        if (factor == 0.0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: %s: linear RoPE scaling "
                               "without a 'factor'", where);
    } else if (strcmp(type, "default") != 0) {
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: %s: rope type '%.40s' is not "
                           "supported (kvx implements default and linear)", where, type);
    }
    const double n_rot = head_dim * partial;
    if (partial > 1.0 || n_rot != floor(n_rot) || (int32_t)n_rot < 2 || (int32_t)n_rot % 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: partial_rotary_factor %g of "
                           "head_dim %d is not an even number of dims >= 2", partial, head_dim);
    out->theta = (float)theta;
    out->freq_scale = (float)(1.0 / factor);
    out->n_rot = (int32_t)n_rot;
    return KVX_OK;
}
