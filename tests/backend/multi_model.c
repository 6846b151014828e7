/* Three compiled models (ma, mb, mc) in one program, called from 4 threads x 100 calls, each
 * thread with its own workspaces, on 1 or 2 threads per call through the library's pthreads
 * pool or an application's launch hook: every output equals the single-threaded one. First
 * the argument checks: NULL pointers, a small or misaligned workspace give an error code and
 * a message. Prints "ok CALLS" and exits 0, else says what differed and exits 1.
 * (tests/backend/test_c_library.py builds it with and without sanitizers.) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ma.h"
#include "mb.h"
#include "mc.h"

#define N_MODELS 3
#define N_INPUTS 3
#define N_THREADS 4
#define N_CALLS 100

/* The application's pool: task 0 on the calling thread, the others on threads started for
   this loop; `pool` counts the loops it ran (one counter per calling thread). */
typedef struct { int (*task)(int, void *); void *data; int i, rc; } job;
static void *run_job(void *arg) {
  job *j = arg;
  j->rc = j->task(j->i, j->data);
  return NULL;
}
static int app_launch(void *pool, int (*task)(int, void *), void *data, int n) {
  job jobs[8];
  pthread_t th[8];
  ++*(int *)pool;
  for (int i = 1; i < n; ++i) {
    jobs[i] = (job){task, data, i, 0};
    if (pthread_create(&th[i], NULL, run_job, &jobs[i])) return -1;
  }
  int rc = task(0, data);
  for (int i = 1; i < n; ++i) {
    pthread_join(th[i], NULL);
    if (!rc) rc = jobs[i].rc;
  }
  return rc;
}

typedef struct {
  const char *name;
  int (*call)(const void *in, void *out, void *ws, size_t bytes, int threads, int *hook);
  size_t (*workspace_size)(int);
  const char *(*last_error)(const void *);
  size_t in_bytes, out_bytes;
} model;

#define WRAP(M)                                                                          \
  static int M##_call(const void *in, void *out, void *ws, size_t bytes, int n, int *hook) { \
    M##_threads t = {n, hook ? app_launch : NULL, hook};                                  \
    const void *ins[1] = {in};                                                            \
    void *outs[1] = {out};                                                                \
    return M##_run_v(ins, outs, ws, bytes, &t);                                           \
  }
WRAP(ma)
WRAP(mb)
WRAP(mc)
#define ENTRY(M) {#M, M##_call, M##_workspace_size, M##_last_error, M##_inputs[0].bytes, \
                  M##_outputs[0].bytes}
static model models[N_MODELS];
static unsigned char *inputs[N_MODELS][N_INPUTS], *want[N_MODELS][N_INPUTS];

static void *aligned(size_t n) { return aligned_alloc(128, (n + 127) / 128 * 128); }

static int fail(const char *what) { fprintf(stderr, "multi_model: %s\n", what); return 1; }

/* Bad arguments: an error code and a message, never a crash. */
static int check_errors(void) {
  size_t need = ma_workspace_size(1);
  unsigned char *ws = aligned(need + 128), out[MA_OUTPUT_0_SIZE * 4];
  const void *in[1] = {inputs[0][0]};
  void *outs[1] = {out};
  ma_threads bad = {0, NULL, NULL};
  if (!ws || MA_NUM_OUTPUTS != 1) return fail("setup");
  if (ma_run_v(in, outs, NULL, need, NULL) != MA_ERR_ARGUMENT) return fail("NULL workspace");
  if (strcmp(ma_last_error(NULL), "workspace is NULL")) return fail("NULL last_error");
  if (ma_run_v(in, outs, ws, need - 1, NULL) != MA_ERR_WORKSPACE ||
      !strstr(ma_last_error(ws), "smaller")) return fail("small workspace");
  if (ma_run_v(in, outs, ws, 16, NULL) != MA_ERR_WORKSPACE) return fail("tiny workspace");
  if (ma_run_v(in, outs, ws + 8, need, NULL) != MA_ERR_WORKSPACE ||
      !strstr(ma_last_error(ws + 8), "aligned")) return fail("misaligned workspace");
  const void *null_in[1] = {NULL};
  if (ma_run_v(null_in, outs, ws, need, NULL) != MA_ERR_ARGUMENT ||
      !strstr(ma_last_error(ws), "NULL")) return fail("NULL input");
  if (ma_run_v(in, NULL, ws, need, NULL) != MA_ERR_ARGUMENT) return fail("NULL outputs");
  if (ma_run_v(in, outs, ws, need, &bad) != MA_ERR_ARGUMENT ||
      !strstr(ma_last_error(ws), "num_threads")) return fail("0 threads");
  if (ma_run_v(in, outs, ws, need, NULL) || ma_last_error(ws)[0]) return fail("good call");
  if (ma_abi_version() != MA_ABI_VERSION) return fail("ABI version");
  if (MA_WORKSPACE_BYTES_FOR(2) != ma_workspace_size(2)) return fail("workspace size");
  free(ws);
  return 0;
}

static void *worker(void *arg) {
  int t = (int)(size_t)arg, hooked = 0, *hook = (t % 2) ? &hooked : NULL;
  void *ws[N_MODELS], *out[N_MODELS];
  size_t bytes[N_MODELS];
  for (int m = 0; m < N_MODELS; ++m) {
    bytes[m] = models[m].workspace_size(2);
    ws[m] = aligned(bytes[m]);
    out[m] = malloc(models[m].out_bytes);
    if (!ws[m] || !out[m]) return "out of memory";
  }
  for (int j = 0; j < N_CALLS; ++j) {
    int m = (j + t) % N_MODELS, k = (j / N_MODELS) % N_INPUTS, n = 1 + (j + t / 2) % 2;
    if (models[m].call(inputs[m][k], out[m], ws[m], bytes[m], n, hook)) {
      fprintf(stderr, "%s: %s\n", models[m].name, models[m].last_error(ws[m]));
      return "a call failed";
    }
    if (memcmp(out[m], want[m][k], models[m].out_bytes)) return "an output differs";
  }
  for (int m = 0; m < N_MODELS; ++m) { free(ws[m]); free(out[m]); }
  return hook && !hooked ? "the application's launch was never called" : NULL;
}

int main(void) {
  model all[N_MODELS] = {ENTRY(ma), ENTRY(mb), ENTRY(mc)};
  unsigned seed = 12345;
  memcpy(models, all, sizeof all);
  for (int m = 0; m < N_MODELS; ++m) {
    void *ws = aligned(models[m].workspace_size(1));
    for (int k = 0; k < N_INPUTS; ++k) {
      inputs[m][k] = malloc(models[m].in_bytes);
      want[m][k] = malloc(models[m].out_bytes);
      for (size_t i = 0; i < models[m].in_bytes; ++i) {
        seed = seed * 1103515245u + 12345u;
        inputs[m][k][i] = (unsigned char)(seed >> 16);
      }
      if (models[m].call(inputs[m][k], want[m][k], ws, models[m].workspace_size(1), 1, NULL))
        return fail(models[m].last_error(ws));
    }
    free(ws);
  }
  if (check_errors()) return 1;
  pthread_t th[N_THREADS];
  for (int t = 0; t < N_THREADS; ++t)
    if (pthread_create(&th[t], NULL, worker, (void *)(size_t)t)) return fail("pthread_create");
  int bad = 0;
  for (int t = 0; t < N_THREADS; ++t) {
    void *why;
    pthread_join(th[t], &why);
    if (why) bad = fail(why);
  }
  if (bad) return 1;
  printf("ok %d\n", N_THREADS * N_CALLS);
  return 0;
}
