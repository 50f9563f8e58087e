/* reload.h — see reload.c. mp_server_reload() is declared in server.h. */
#ifndef MP_RELOAD_H
#define MP_RELOAD_H

#include "store.h"

/* The store's history policies from mp.cfg.history: out has room for
 * mp.cfg.history.npolicies entries; patterns stay owned by the config. */
void mp_reload_store_policies(mp_store_policy *out, mp_store_policy *def);

/* A memory store with mp.cfg's history limits (at start; the fuzz harnesses
 * make a fresh one per input). NULL if a policy is invalid. */
mp_store *mp_reload_open_store(void);

#endif
