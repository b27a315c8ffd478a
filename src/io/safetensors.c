/* io/safetensors: header validation, shard sets, and dtype conversion (see safetensors.h). */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/f16.h"
#include "util/err.h"
#include "util/json.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[KVX_ST_DTYPE_COUNT] = {
    [KVX_ST_BOOL] = {"BOOL", 1},       [KVX_ST_U8] = {"U8", 1},
    [KVX_ST_I8] = {"I8", 1},           [KVX_ST_U16] = {"U16", 2},
    [KVX_ST_I16] = {"I16", 2},         [KVX_ST_U32] = {"U32", 4},
    [KVX_ST_I32] = {"I32", 4},         [KVX_ST_U64] = {"U64", 8},
    [KVX_ST_I64] = {"I64", 8},         [KVX_ST_F16] = {"F16", 2},
    [KVX_ST_BF16] = {"BF16", 2},       [KVX_ST_F32] = {"F32", 4},
    [KVX_ST_F64] = {"F64", 8},         [KVX_ST_F8_E4M3] = {"F8_E4M3", 1},
    [KVX_ST_F8_E5M2] = {"F8_E5M2", 1}, [KVX_ST_F8_E8M0] = {"F8_E8M0", 1},
};

const char *kvx_st_dtype_name(enum kvx_st_dtype t)
{
    return (unsigned)t < KVX_ST_DTYPE_COUNT ? dtypes[t].name : "?";
}

size_t kvx_st_dtype_size(enum kvx_st_dtype t)
{
    return (unsigned)t < KVX_ST_DTYPE_COUNT ? dtypes[t].size : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* One image: header → tensors appended to st (shard index `shard`) */

/* A non-negative integer that fits int64 (exactly: JSON integers are kept as int64). */
static bool jv_nonneg_int(const struct kvx_jv *v, int64_t *out)
{
    if (!v || v->type != KVX_JV_NUMBER || !v->is_int || v->i < 0)
        return false;
    *out = v->i;
    return true;
}

static enum kvx_status push_tensor(struct kvx_safetensors *st, uint64_t *cap,
                                   const struct kvx_st_tensor *t, struct kvx_err *err)
{
    if (st->n_tensors == *cap) {
        uint64_t nc = *cap ? *cap * 2 : 64;
        struct kvx_st_tensor *p = realloc(st->tensors, (size_t)nc * sizeof *p);
        if (!p)
            return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
        st->tensors = p;
        *cap = nc;
    }
    st->tensors[st->n_tensors++] = *t;
    return KVX_OK;
}

/* One header member `name` → a tensor (data bounds checked against data_size). */
static enum kvx_status parse_entry(const char *name, size_t name_len, const struct kvx_jv *e,
                                   const uint8_t *data, size_t data_size,
                                   struct kvx_st_tensor *t, struct kvx_err *err)
{
    if (name_len == 0 || strlen(name) != name_len)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor name at header byte %zu is empty or "
                           "holds a NUL", e->offset);
    if (e->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': entry is a %s, not an object",
                           name, kvx_jv_type_name(e->type));
    for (size_t i = 0; i < e->len; i++)
        if (strcmp(e->keys[i], "dtype") && strcmp(e->keys[i], "shape") &&
            strcmp(e->keys[i], "data_offsets"))
            return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': unknown key '%.64s' at "
                               "header byte %zu", name, e->keys[i], e->items[i].offset);
    const struct kvx_jv *dt = kvx_jv_get(e, "dtype"), *sh = kvx_jv_get(e, "shape"),
                        *off = kvx_jv_get(e, "data_offsets");
    if (!dt || !sh || !off)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': key '%s' is missing", name,
                           !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    memset(t, 0, sizeof *t);
    t->name = name;
    int d = -1;
    if (dt->type == KVX_JV_STRING)
        for (int i = 0; i < KVX_ST_DTYPE_COUNT; i++)
            if (strcmp(dt->str, dtypes[i].name) == 0)
                d = i;
    if (d < 0)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': dtype %s%.32s%s at header byte "
                           "%zu is not a safetensors dtype", name,
                           dt->type == KVX_JV_STRING ? "'" : "(a ",
                           dt->type == KVX_JV_STRING ? dt->str : kvx_jv_type_name(dt->type),
                           dt->type == KVX_JV_STRING ? "'" : ")", dt->offset);
    t->dtype = (enum kvx_st_dtype)d;
    if (sh->type != KVX_JV_ARRAY || sh->len > KVX_ST_MAX_DIMS)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': shape at header byte %zu is not "
                           "an array of at most %d dims", name, sh->offset, KVX_ST_MAX_DIMS);
    t->n_dims = (uint32_t)sh->len;
    uint64_t n = 1;
    bool overflow = false;
    for (size_t i = 0; i < sh->len; i++) {
        int64_t v;
        if (!jv_nonneg_int(&sh->items[i], &v))
            return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': shape[%zu] at header byte "
                               "%zu is not a non-negative integer", name, i,
                               sh->items[i].offset);
        t->shape[i] = v;
        if (v && n > (uint64_t)INT64_MAX / (uint64_t)v)
            overflow = true;
        else
            n *= (uint64_t)v;
    }
    const size_t es = dtypes[d].size;
    if (overflow || n > SIZE_MAX / es)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': shape overflows (element count "
                           "times %zu-byte elements does not fit 64 bits)", name, es);
    t->n_elem = (int64_t)n;
    t->nbytes = (size_t)n * es;
    int64_t b, en;
    if (off->type != KVX_JV_ARRAY || off->len != 2 || !jv_nonneg_int(&off->items[0], &b) ||
        !jv_nonneg_int(&off->items[1], &en))
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': data_offsets at header byte %zu "
                           "is not [begin, end] of non-negative integers", name, off->offset);
    if (b > en || (uint64_t)en > data_size)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': data_offsets [%lld, %lld] lie "
                           "outside the %zu bytes of data", name, (long long)b, (long long)en,
                           data_size);
    if ((uint64_t)(en - b) != t->nbytes)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': data_offsets [%lld, %lld] hold "
                           "%lld bytes but shape x %s needs %zu", name, (long long)b,
                           (long long)en, (long long)(en - b), dtypes[d].name, t->nbytes);
    t->data = data + b;
    return KVX_OK;
}

static int cmp_by_data(const void *a, const void *b)
{
    const struct kvx_st_tensor *x = *(const struct kvx_st_tensor *const *)a,
                               *y = *(const struct kvx_st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : 0;
}

/* No two of the tensors [first, st->n_tensors) share a byte. */
static enum kvx_status check_overlap(const struct kvx_safetensors *st, uint64_t first,
                                     const struct kvx_st_shard *sh, struct kvx_err *err)
{
    const uint64_t n = st->n_tensors - first;
    if (n < 2)
        return KVX_OK;
    const struct kvx_st_tensor **v = malloc((size_t)n * sizeof *v);
    if (!v)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        v[i] = &st->tensors[first + i];
    qsort(v, (size_t)n, sizeof *v, cmp_by_data);
    enum kvx_status s = KVX_OK;
    const struct kvx_st_tensor *prev = NULL;   /* the non-empty tensor reaching furthest */
    for (uint64_t i = 0; i < n && s == KVX_OK; i++) {
        if (v[i]->nbytes == 0)
            continue;
        if (prev && v[i]->data < prev->data + prev->nbytes)
            s = kvx_err_set(err, KVX_ERR_FORMAT, "tensors '%s' (bytes %zu..%zu) and '%s' "
                            "(bytes %zu..%zu) overlap", prev->name,
                            (size_t)(prev->data - sh->base - sh->data_offset),
                            (size_t)(prev->data - sh->base - sh->data_offset) + prev->nbytes,
                            v[i]->name, (size_t)(v[i]->data - sh->base - sh->data_offset),
                            (size_t)(v[i]->data - sh->base - sh->data_offset) + v[i]->nbytes);
        if (!prev || v[i]->data + v[i]->nbytes > prev->data + prev->nbytes)
            prev = v[i];
    }
    free(v);
    return s;
}

/* Names are owned by one allocation per shard, kept in `names` (freed by kvx_st_close). */
struct st_names {
    char **blocks;
    uint32_t n;
};

/* Keep a copy of one metadata pair (its strings owned through `names`). */
static enum kvx_status add_meta(struct kvx_safetensors *st, struct st_names *names,
                                const char *key, const char *val, struct kvx_err *err)
{
    if (kvx_st_metadata(st, key))
        return KVX_OK;
    const size_t kl = strlen(key) + 1, vl = strlen(val) + 1;
    char **nb = realloc(names->blocks, (names->n + 1) * sizeof *nb);
    if (nb)
        names->blocks = nb;
    char *b = nb ? malloc(kl + vl) : NULL;
    const char **k = realloc(st->meta_keys, (st->n_meta + 1) * sizeof *k);
    if (k)
        st->meta_keys = k;
    const char **v = k ? realloc(st->meta_vals, (st->n_meta + 1) * sizeof *v) : NULL;
    if (v)
        st->meta_vals = v;
    if (!b || !v) {
        free(b);
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    }
    names->blocks[names->n++] = b;
    memcpy(b, key, kl);
    memcpy(b + kl, val, vl);
    st->meta_keys[st->n_meta] = b;
    st->meta_vals[st->n_meta++] = b + kl;
    return KVX_OK;
}

const char *kvx_st_metadata(const struct kvx_safetensors *st, const char *key)
{
    for (uint32_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0)
            return st->meta_vals[i];
    return NULL;
}

static enum kvx_status parse_image(struct kvx_safetensors *st, uint64_t *cap, uint32_t shard,
                                   struct st_names *names, struct kvx_err *err)
{
    const struct kvx_st_shard *sh = &st->shards[shard];
    if (sh->size < 8)
        return kvx_err_set(err, KVX_ERR_FORMAT, "file of %zu bytes is shorter than the 8-byte "
                           "header length", sh->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | sh->base[i];
    if (hlen > KVX_ST_MAX_HEADER || hlen > sh->size - 8)
        return kvx_err_set(err, KVX_ERR_FORMAT, "header length %llu at byte 0 exceeds the "
                           "file (%zu bytes) or the %llu-byte limit", (unsigned long long)hlen,
                           sh->size, (unsigned long long)KVX_ST_MAX_HEADER);
    if (hlen < 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "header length %llu is too short for a JSON "
                           "object", (unsigned long long)hlen);
    st->shards[shard].data_offset = 8 + (size_t)hlen;
    struct kvx_jv *h;
    enum kvx_status s = kvx_jv_parse((const char *)sh->base + 8, (size_t)hlen, &h, err);
    if (s != KVX_OK) {
        kvx_err_prefix(err, "header (bytes 8..%llu)", (unsigned long long)(8 + hlen));
        return s;
    }
    if (h->type != KVX_JV_OBJECT) {
        const enum kvx_jv_type t = h->type;
        kvx_jv_free(h);
        return kvx_err_set(err, KVX_ERR_FORMAT, "header is a JSON %s, not an object",
                           kvx_jv_type_name(t));
    }
    /* one block for all names of this image */
    size_t total = 0;
    for (size_t i = 0; i < h->len; i++)
        total += strlen(h->keys[i]) + 1;
    char **nb = realloc(names->blocks, (names->n + 1) * sizeof *nb);
    char *block = nb ? malloc(total + 1) : NULL;
    if (nb)
        names->blocks = nb;
    if (!block) {
        kvx_jv_free(h);
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    }
    names->blocks[names->n++] = block;
    const uint64_t first = st->n_tensors;
    const uint8_t *data = sh->base + sh->data_offset;
    const size_t data_size = sh->size - sh->data_offset;
    for (size_t i = 0; i < h->len && s == KVX_OK; i++) {
        const char *key = h->keys[i];
        if (strcmp(key, "__metadata__") == 0) {
            const struct kvx_jv *md = &h->items[i];
            if (md->type != KVX_JV_OBJECT)
                s = kvx_err_set(err, KVX_ERR_FORMAT, "__metadata__ at header byte %zu is not "
                                "an object", md->offset);
            for (size_t j = 0; s == KVX_OK && j < md->len; j++)
                if (md->items[j].type != KVX_JV_STRING)
                    s = kvx_err_set(err, KVX_ERR_FORMAT, "__metadata__ '%.64s' at header byte "
                                    "%zu is not a string", md->keys[j], md->items[j].offset);
                else
                    s = add_meta(st, names, md->keys[j], md->items[j].str, err);
            continue;
        }
        const size_t kl = strlen(key);
        memcpy(block, key, kl + 1);
        struct kvx_st_tensor t;
        s = parse_entry(block, kl, &h->items[i], data, data_size, &t, err);
        if (s == KVX_OK) {
            t.shard = shard;
            s = push_tensor(st, cap, &t, err);
        }
        block += kl + 1;
    }
    kvx_jv_free(h);
    if (s == KVX_OK)
        s = check_overlap(st, first, sh, err);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* Opening files and shard sets */

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const struct kvx_st_tensor *)a)->name, ((const struct kvx_st_tensor *)b)->name);
}

/* Sort by name and reject duplicates (across shards). */
static enum kvx_status finish(struct kvx_safetensors *st, struct kvx_err *err)
{
    if (st->n_tensors > 1)   /* (an empty header leaves tensors NULL) */
        qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_by_name);
    for (uint64_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' appears twice (shards '%s' and "
                               "'%s')", st->tensors[i].name,
                               st->shards[st->tensors[i - 1].shard].path
                                   ? st->shards[st->tensors[i - 1].shard].path : "memory",
                               st->shards[st->tensors[i].shard].path
                                   ? st->shards[st->tensors[i].shard].path : "memory");
    return KVX_OK;
}

/* The struct keeps its name blocks right after the shards: one more allocation to free. */
struct st_owned {
    struct kvx_safetensors st;
    struct st_names names;
    uint64_t cap;
};

static struct st_owned *st_new(uint32_t n_shards)
{
    struct st_owned *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->st.shards = calloc(n_shards ? n_shards : 1, sizeof *o->st.shards);
    if (!o->st.shards) {
        free(o);
        return NULL;
    }
    o->st.n_shards = n_shards;
    return o;
}

enum kvx_status kvx_st_parse(const void *data, size_t size, struct kvx_safetensors **out,
                             struct kvx_err *err)
{
    *out = NULL;
    struct st_owned *o = st_new(1);
    if (!o)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    o->st.shards[0].base = data;
    o->st.shards[0].size = size;
    enum kvx_status s = parse_image(&o->st, &o->cap, 0, &o->names, err);
    if (s == KVX_OK)
        s = finish(&o->st, err);
    if (s != KVX_OK) {
        kvx_st_close(&o->st);
        return s;
    }
    *out = &o->st;
    return KVX_OK;
}

void kvx_st_close(struct kvx_safetensors *st)
{
    if (!st)
        return;
    struct st_owned *o = (struct st_owned *)st; /* st is the first member */
    for (uint32_t i = 0; i < st->n_shards; i++) {
        if (st->shards[i].owns_map)
            munmap((void *)st->shards[i].base, st->shards[i].size);
        free(st->shards[i].path);
    }
    for (uint32_t i = 0; i < o->names.n; i++)
        free(o->names.blocks[i]);
    free(o->names.blocks);
    free(st->shards);
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_vals);
    free(st->dir);
    free(o);
}

static enum kvx_status map_file(const char *path, struct kvx_st_shard *sh, struct kvx_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvx_err_set(err, errno == ENOENT ? KVX_ERR_NOT_FOUND : KVX_ERR_IO,
                           "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 8 ||
        (uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return kvx_err_set(err, KVX_ERR_FORMAT, "'%s' is not a safetensors file (a regular "
                           "file of at least 8 bytes)", path);
    }
    const size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return kvx_err_set(err, KVX_ERR_IO, "cannot map '%s' (%zu bytes): %s", path, size,
                           strerror(e));
    sh->base = map;
    sh->size = size;
    sh->owns_map = true;
    sh->path = strdup(path);
    if (!sh->path)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    return KVX_OK;
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p)
        snprintf(p, a + b + 2, "%s/%s", dir, name);
    return p;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    char *d = malloc((size_t)(slash - path) + 1);
    if (d) {
        memcpy(d, path, (size_t)(slash - path));
        d[slash - path] = '\0';
    }
    return d;
}

static enum kvx_status open_single(const char *path, struct kvx_safetensors **out,
                                   struct kvx_err *err)
{
    struct st_owned *o = st_new(1);
    if (!o)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    enum kvx_status s = map_file(path, &o->st.shards[0], err);
    if (s == KVX_OK && !(o->st.dir = dir_of(path)))
        s = kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    if (s == KVX_OK && (s = parse_image(&o->st, &o->cap, 0, &o->names, err)) != KVX_OK)
        kvx_err_prefix(err, "%s", path);
    if (s == KVX_OK)
        s = finish(&o->st, err);
    if (s != KVX_OK) {
        kvx_st_close(&o->st);
        return s;
    }
    *out = &o->st;
    return KVX_OK;
}

/* The shard file names of an index's weight_map, each once, in first-seen order. */
static enum kvx_status index_shards(const char *path, const struct kvx_jv *wm, const char ***names,
                                    uint32_t *n, struct kvx_err *err)
{
    *names = calloc(wm->len ? wm->len : 1, sizeof **names);
    if (!*names)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    *n = 0;
    for (size_t i = 0; i < wm->len; i++) {
        const struct kvx_jv *f = &wm->items[i];
        if (f->type != KVX_JV_STRING || f->len == 0 || strlen(f->str) != f->len ||
            strchr(f->str, '/') || strcmp(f->str, "..") == 0 || strcmp(f->str, ".") == 0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "%s: weight_map['%.100s'] at byte %zu is "
                               "not a file name in the index's folder", path, wm->keys[i],
                               f->offset);
        uint32_t j = 0;
        while (j < *n && strcmp((*names)[j], f->str))
            j++;
        if (j == *n)
            (*names)[(*n)++] = f->str;
    }
    return KVX_OK;
}

static enum kvx_status open_index(const char *path, struct kvx_safetensors **out,
                                  struct kvx_err *err)
{
    struct kvx_jv *idx;
    enum kvx_status s = kvx_jv_parse_file(path, &idx, err);
    if (s != KVX_OK)
        return s;
    const struct kvx_jv *wm = kvx_jv_get(idx, "weight_map");
    const char **files = NULL;
    uint32_t n_files = 0;
    struct st_owned *o = NULL;
    if (!wm || wm->type != KVX_JV_OBJECT || wm->len == 0) {
        s = kvx_err_set(err, KVX_ERR_FORMAT, "%s: key 'weight_map' is missing or not a "
                        "non-empty object", path);
        goto out;
    }
    if ((s = index_shards(path, wm, &files, &n_files, err)) != KVX_OK)
        goto out;
    if (!(o = st_new(n_files)) || !(o->st.dir = dir_of(path))) {
        s = kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < n_files && s == KVX_OK; i++) {
        char *fp = join_path(o->st.dir, files[i]);
        if (!fp) {
            s = kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
            break;
        }
        s = map_file(fp, &o->st.shards[i], err);
        if (s != KVX_OK)
            kvx_err_prefix(err, "%s names shard '%s'", path, files[i]);
        else if ((s = parse_image(&o->st, &o->cap, i, &o->names, err)) != KVX_OK)
            kvx_err_prefix(err, "%s", fp);
        free(fp);
    }
    if (s == KVX_OK)
        s = finish(&o->st, err);
    /* the index and the shards must agree, both ways */
    for (size_t i = 0; s == KVX_OK && i < wm->len; i++) {
        const struct kvx_st_tensor *t = kvx_st_find(&o->st, wm->keys[i]);
        if (!t)
            s = kvx_err_set(err, KVX_ERR_FORMAT, "%s: tensor '%.200s' is in the index but not "
                            "in shard '%s'", path, wm->keys[i], wm->items[i].str);
        else if (strcmp(files[t->shard], wm->items[i].str) != 0)
            s = kvx_err_set(err, KVX_ERR_FORMAT, "%s: tensor '%.200s' is in shard '%s', the "
                            "index says '%s'", path, wm->keys[i], files[t->shard],
                            wm->items[i].str);
    }
    if (s == KVX_OK && o->st.n_tensors != wm->len) {
        for (uint64_t i = 0; i < o->st.n_tensors && s == KVX_OK; i++)
            if (!kvx_jv_get(wm, o->st.tensors[i].name))
                s = kvx_err_set(err, KVX_ERR_FORMAT, "%s: tensor '%.200s' of shard '%s' is not "
                                "in the index", path, o->st.tensors[i].name,
                                files[o->st.tensors[i].shard]);
    }
out:
    free(files);
    kvx_jv_free(idx);
    if (s != KVX_OK) {
        kvx_st_close(o ? &o->st : NULL);
        return s;
    }
    *out = &o->st;
    return KVX_OK;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

enum kvx_status kvx_st_open(const char *path, struct kvx_safetensors **out, struct kvx_err *err)
{
    if (!path || !out)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kvx_st_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return kvx_err_set(err, errno == ENOENT ? KVX_ERR_NOT_FOUND : KVX_ERR_IO,
                           "cannot open '%s': %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return ends_with(path, ".json") ? open_index(path, out, err)
                                        : open_single(path, out, err);
    static const char *const names[] = {"model.safetensors.index.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *p = join_path(path, names[i]);
        if (!p)
            return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
        enum kvx_status s = KVX_ERR_NOT_FOUND;
        if (access(p, F_OK) == 0)
            s = i == 0 ? open_index(p, out, err) : open_single(p, out, err);
        free(p);
        if (s != KVX_ERR_NOT_FOUND || *out)
            return s;
    }
    return kvx_err_set(err, KVX_ERR_NOT_FOUND, "'%s' holds neither model.safetensors.index.json "
                       "nor model.safetensors", path);
}

const struct kvx_st_tensor *kvx_st_find(const struct kvx_safetensors *st, const char *name)
{
    uint64_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0)
            return &st->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Conversion */

/* e4m3fn: value = (-1)^s * 2^(e-7) * (1 + m/8) for e > 0, (-1)^s * 2^-6 * m/8 for e == 0;
 * e == 15 && m == 7 is NaN (there are no infinities). */
float kvx_st_fp8_e4m3_to_f32(uint8_t b)
{
    const int s = b >> 7, e = (b >> 3) & 0xF, m = b & 7;
    float v;
    if (e == 0xF && m == 7)
        v = NAN;
    else if (e == 0)
        v = ldexpf((float)m, -9);
    else
        v = ldexpf((float)(8 + m), e - 10);
    return s ? -v : v;
}

static float load_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

static uint16_t load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

enum kvx_status kvx_st_read_f32(const struct kvx_st_tensor *t, float *dst, int64_t n,
                                struct kvx_err *err)
{
    if (n < 0 || n > t->n_elem)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "tensor '%s': %lld elements asked, it has "
                           "%lld", t->name, (long long)n, (long long)t->n_elem);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case KVX_ST_F32:
        for (int64_t i = 0; i < n; i++)
            dst[i] = load_f32(p + 4 * i);
        return KVX_OK;
    case KVX_ST_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = kvx_f16_to_f32(load_u16(p + 2 * i));
        return KVX_OK;
    case KVX_ST_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = kvx_bf16_to_f32(load_u16(p + 2 * i));
        return KVX_OK;
    case KVX_ST_F8_E4M3:
        for (int64_t i = 0; i < n; i++)
            dst[i] = kvx_st_fp8_e4m3_to_f32(p[i]);
        return KVX_OK;
    default:
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tensor '%s' has dtype %s, which kvx does "
                           "not read as floats", t->name, kvx_st_dtype_name(t->dtype));
    }
}

/* e8m0fnu: 8 exponent bits, bias 127, no sign and no mantissa; 0xFF encodes NaN. */
float kvx_st_e8m0_to_f32(uint8_t b)
{
    return b == 0xFF ? NAN : ldexpf(1.0f, (int)b - 127);
}

/* e2m1: value = (-1)^s * 2^(e-1) * (1 + m/2) for e > 0, (-1)^s * m/2 for e == 0. */
float kvx_st_fp4_e2m1_to_f32(uint8_t n)
{
    const int s = (n >> 3) & 1, e = (n >> 1) & 3, m = n & 1;
    const float v = e == 0 ? 0.5f * (float)m : ldexpf(1.0f + 0.5f * (float)m, e - 1);
    return s ? -v : v;
}

/* A scale grid [gr, gc] of F32, BF16 or F8_E8M0 (no NaN) for weight `w`: checked, then read
 * into floats (malloc'd, gr*gc). */
static enum kvx_status read_scales(const struct kvx_st_tensor *w, const struct kvx_st_tensor *sc,
                                   int64_t gr, int64_t gc, const char *what, float **out,
                                   struct kvx_err *err)
{
    *out = NULL;
    if ((sc->dtype != KVX_ST_F32 && sc->dtype != KVX_ST_BF16 && sc->dtype != KVX_ST_F8_E8M0) ||
        sc->n_dims != 2 || sc->shape[0] != gr || sc->shape[1] != gc) {
        char shape[96] = "";
        size_t k = 0;
        for (uint32_t d = 0; d < sc->n_dims && k < sizeof shape; d++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? ", " : "",
                                  (long long)sc->shape[d]);
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' (%s [%s]) is not the F32/BF16/"
                           "F8_E8M0 [%lld, %lld] scale grid of '%s' (%s)", sc->name,
                           kvx_st_dtype_name(sc->dtype), shape, (long long)gr, (long long)gc,
                           w->name, what);
    }
    float *s = malloc((size_t)(gr * gc) * sizeof *s + 1);
    if (!s)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    const uint8_t *p = sc->data;
    for (int64_t i = 0; i < gr * gc; i++) {
        if (sc->dtype == KVX_ST_F8_E8M0 && p[i] == 0xFF) {
            free(s);
            return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': scale [%lld, %lld] is the "
                               "E8M0 NaN (0xFF)", sc->name, (long long)(i / gc),
                               (long long)(i % gc));
        }
        s[i] = sc->dtype == KVX_ST_F32    ? load_f32(p + 4 * i)
               : sc->dtype == KVX_ST_BF16 ? kvx_bf16_to_f32(load_u16(p + 2 * i))
                                          : kvx_st_e8m0_to_f32(p[i]);
    }
    *out = s;
    return KVX_OK;
}

enum kvx_status kvx_st_dequant_fp8(const struct kvx_st_tensor *w,
                                   const struct kvx_st_tensor *scale_inv, int64_t block_rows,
                                   int64_t block_cols, float *dst, struct kvx_err *err)
{
    if (w->dtype != KVX_ST_F8_E4M3 || w->n_dims != 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is %s with %u dims, not a 2-D "
                           "F8_E4M3 weight", w->name, kvx_st_dtype_name(w->dtype), w->n_dims);
    if (block_rows < 1 || block_cols < 1)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "FP8 block size %lld x %lld",
                           (long long)block_rows, (long long)block_cols);
    const int64_t rows = w->shape[0], cols = w->shape[1];
    const int64_t br = (rows + block_rows - 1) / block_rows, bc = (cols + block_cols - 1) / block_cols;
    char what[160];
    snprintf(what, sizeof what, "F8_E4M3 [%lld, %lld] in %lldx%lld blocks", (long long)rows,
             (long long)cols, (long long)block_rows, (long long)block_cols);
    float *s;
    enum kvx_status st = read_scales(w, scale_inv, br, bc, what, &s, err);
    if (st != KVX_OK)
        return st;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            dst[r * cols + c] = kvx_st_fp8_e4m3_to_f32(w->data[r * cols + c]) *
                                s[(r / block_rows) * bc + c / block_cols];
    free(s);
    return KVX_OK;
}

enum kvx_status kvx_st_dequant_fp4(const struct kvx_st_tensor *w, const struct kvx_st_tensor *scale,
                                   int64_t block_cols, float *dst, struct kvx_err *err)
{
    if ((w->dtype != KVX_ST_I8 && w->dtype != KVX_ST_U8) || w->n_dims != 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is %s with %u dims, not a 2-D "
                           "I8/U8 packed FP4 weight", w->name, kvx_st_dtype_name(w->dtype),
                           w->n_dims);
    if (block_cols < 1)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "FP4 block size %lld",
                           (long long)block_cols);
    const int64_t rows = w->shape[0], half = w->shape[1], cols = 2 * half;
    const int64_t bc = (cols + block_cols - 1) / block_cols;
    char what[160];
    snprintf(what, sizeof what, "FP4 [%lld, %lld] packed as [%lld, %lld], %lld inputs a scale",
             (long long)rows, (long long)cols, (long long)rows, (long long)half,
             (long long)block_cols);
    float *s;
    enum kvx_status st = read_scales(w, scale, rows, bc, what, &s, err);
    if (st != KVX_OK)
        return st;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < half; j++) {
            const uint8_t b = w->data[r * half + j];
            const int64_t c = 2 * j;
            dst[r * cols + c] = kvx_st_fp4_e2m1_to_f32(b & 0xF) * s[r * bc + c / block_cols];
            dst[r * cols + c + 1] =
                kvx_st_fp4_e2m1_to_f32(b >> 4) * s[r * bc + (c + 1) / block_cols];
        }
    free(s);
    return KVX_OK;
}
