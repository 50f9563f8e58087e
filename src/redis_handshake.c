/* redis_handshake.c — what a new connection sends before it counts as up.
 *
 * The handshake is pipelined behind the connect (redis_conn.c):
 *   command: [AUTH] [SELECT] INFO server, CONFIG GET appendonly,
 *            CONFIG GET appendfsync, SCRIPT LOAD (each registered script),
 *            then the generation script (redis/generation.lua) -> UP;
 *   pub/sub: [AUTH] SUBSCRIBE mp:probe:<node>:<shard> -> UP at its
 *            confirmation (redis_sub.c).
 *
 * Generation: the generation script returns the shard's mp:gen, a random
 * name that changes whenever the shard may have lost data (it is missing,
 * or Redis's run_id changed and the shard is not durable: appendonly yes
 * with appendfsync always, read with CONFIG GET; if CONFIG is not allowed
 * the shard counts as not durable). Channel scripts carry it and give a
 * channel a new epoch when its meta was made under another one.
 */
#include <stdlib.h>
#include <string.h>

#include "redis_int.h"

/* ---- handshake steps ------------------------------------------------------------ */

/* An internal step's reply belongs to the current attempt of c, or to a
 * connection already given up (then: ignore it). */
static int step_current(req *rq, conn *c) { return c->serial == rq->serial && c->state == C_CONNECTING; }

static void step_fail(conn *c, const char *what, const redisReply *reply)
{
    char why[160];
    snprintf(why, sizeof why, "%s: %s", what, reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no answer");
    redis_conn_drop(c, why);
}

static void hs_auth(req *rq, redisReply *reply)
{
    conn *c = rq->via;
    if (!reply || !step_current(rq, c))
        return;
    if (reply->type == REDIS_REPLY_ERROR)
        step_fail(c, "AUTH", reply);
}

static void hs_select(req *rq, redisReply *reply)
{
    conn *c = &rq->sh->cmd;
    if (reply && step_current(rq, c) && reply->type == REDIS_REPLY_ERROR)
        step_fail(c, "SELECT", reply);
}

static void hs_info(req *rq, redisReply *reply)
{
    shard *sh = rq->sh;
    if (!reply || !step_current(rq, &sh->cmd))
        return;
    const char *p = reply->type == REDIS_REPLY_STRING ? strstr(reply->str, "run_id:") : NULL;
    if (!p) {
        step_fail(&sh->cmd, "INFO server (no run_id)", reply);
        return;
    }
    p += 7;
    size_t n = strcspn(p, "\r\n");
    if (n >= sizeof sh->run_id)
        n = sizeof sh->run_id - 1;
    memcpy(sh->run_id, p, n);
    sh->run_id[n] = '\0';
}

/* CONFIG GET x -> [x, value]; an error (CONFIG renamed or forbidden) means
 * "not known to be durable". */
static int config_is(const redisReply *reply, const char *value)
{
    return reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
           reply->element[1]->type == REDIS_REPLY_STRING && strcmp(reply->element[1]->str, value) == 0;
}

static void hs_aof(req *rq, redisReply *reply)
{
    if (reply && step_current(rq, &rq->sh->cmd))
        rq->sh->aof_yes = config_is(reply, "yes");
}

static void hs_fsync(req *rq, redisReply *reply)
{
    if (reply && step_current(rq, &rq->sh->cmd))
        rq->sh->fsync_always = config_is(reply, "always");
}

static void hs_load(req *rq, redisReply *reply)
{
    if (reply && step_current(rq, &rq->sh->cmd) && reply->type == REDIS_REPLY_ERROR)
        step_fail(&rq->sh->cmd, "SCRIPT LOAD", reply);
}

static void hs_generation(req *rq, redisReply *reply)
{
    shard *sh = rq->sh;
    if (!reply || !step_current(rq, &sh->cmd))
        return;
    if (reply->type != REDIS_REPLY_STRING || reply->len == 0 || reply->len >= sizeof sh->gen) {
        step_fail(&sh->cmd, "generation check", reply);
        return;
    }
    memcpy(sh->gen, reply->str, reply->len);
    sh->gen[reply->len] = '\0';
    redis_conn_up(&sh->cmd);
}

/* Sends one handshake step on the connecting context (hiredis buffers it
 * until the connect completes). */
static int send_step(conn *c, req_fn fn, int argc, const char **argv, const size_t *lens)
{
    shard *sh = c->sh;
    req *rq = redis_req_new(sh, fn, argc, argv, lens);
    if (!rq)
        return -1;
    rq->serial = c->serial;
    if (c->kind == K_SUB) {
        /* the pub/sub context: only AUTH goes this way, before SUBSCRIBE */
        if (redisAsyncFormattedCommand(c->ac, redis_on_reply, rq, rq->cmd, rq->len) != REDIS_OK) {
            redis_req_free(rq);
            return -1;
        }
        rq->via = c;
        list_push(&sh->sub_steps, rq);
        return 0;
    }
    if (redis_write_req(sh, rq) < 0) {
        redis_req_free(rq);
        return -1;
    }
    return 0;
}

static void hs_fsync_then_generation(req *rq, redisReply *reply);

int redis_send_cmd_handshake(conn *c)
{
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    sh->run_id[0] = '\0';
    sh->aof_yes = sh->fsync_always = 0;
    size_t l[4];
    int rc = 0;
    if (r->password) {
        const char *a[2] = { "AUTH", r->password };
        l[0] = 4; l[1] = strlen(r->password);
        rc |= send_step(c, hs_auth, 2, a, l);
    }
    if (r->cfg.db) {
        char db[16];
        const char *a[2] = { "SELECT", db };
        l[0] = 6; l[1] = (size_t)snprintf(db, sizeof db, "%d", r->cfg.db);
        rc |= send_step(c, hs_select, 2, a, l);
    }
    const char *info[2] = { "INFO", "server" };
    l[0] = 4; l[1] = 6;
    rc |= send_step(c, hs_info, 2, info, l);
    const char *aof[3] = { "CONFIG", "GET", "appendonly" };
    l[0] = 6; l[1] = 3; l[2] = 10;
    rc |= send_step(c, hs_aof, 3, aof, l);
    const char *fsync[3] = { "CONFIG", "GET", "appendfsync" };
    l[2] = 11;
    rc |= send_step(c, hs_fsync_then_generation, 3, fsync, l);
    for (mp_redis_script *s = r->scripts; s; s = s->next) {
        const char *a[3] = { "SCRIPT", "LOAD", s->source };
        l[0] = 6; l[1] = 4; l[2] = s->len;
        rc |= send_step(c, hs_load, 3, a, l);
    }
    return rc;
}

/* The generation check needs INFO's and CONFIG's answers: it is sent from
 * the last of them, behind the SCRIPT LOADs already in the pipe. */
static void hs_fsync_then_generation(req *rq, redisReply *reply)
{
    hs_fsync(rq, reply);
    shard *sh = rq->sh;
    conn *c = &sh->cmd;
    if (!reply || !step_current(rq, c))
        return;
    char cand[24];
    snprintf(cand, sizeof cand, "%012llx", (unsigned long long)(next_random(sh->r) & 0xffffffffffffull));
    const char *durable = sh->aof_yes && sh->fsync_always ? "1" : "0";
    const mp_redis_script *g = sh->r->generation;
    const char *a[8] = { "EVALSHA", g->sha, "2", "mp:gen", "mp:run", sh->run_id, durable, cand };
    size_t l[8] = { 7, 40, 1, 6, 6, strlen(sh->run_id), 1, strlen(cand) };
    req *gq = redis_req_new(sh, hs_generation, 8, a, l);
    if (!gq) {
        redis_conn_drop(c, "out of memory");
        return;
    }
    gq->serial = c->serial;
    gq->script = g;
    if (redis_write_req(sh, gq) < 0) {
        redis_req_free(gq);
        redis_conn_drop(c, "cannot send the generation check");
    }
}

int redis_send_sub_handshake(conn *c)
{
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    if (r->password) {
        const char *a[2] = { "AUTH", r->password };
        size_t l[2] = { 4, strlen(r->password) };
        if (send_step(c, hs_auth, 2, a, l) < 0)
            return -1;
    }
    return redisAsyncCommand(c->ac, redis_on_sub_reply, c, "SUBSCRIBE %s", sh->probe) == REDIS_OK ? 0 : -1;
}

