/* Who calls libc's rand()/random()/srand()/srandom() in a process: an LD_PRELOAD counter.

   Selective Search's box order depends on the process-wide rand() stream (proposals/selective_search.py),
   so any other caller can reorder its boxes. Build and run, e.g. over the whole test suite:

       gcc -O2 -shared -fPIC -o /tmp/rand_callers.so tools/rand_callers.c -ldl -lpthread
       LD_PRELOAD=/tmp/rand_callers.so python -m pytest -q
       cat /tmp/rand_callers.*.txt

   Each process that exits normally writes /tmp/rand_callers.<pid>.txt: one line per (function, main
   thread or not, calling library) with the number of calls. (Processes ended by os._exit, such as
   multiprocessing workers, write nothing.) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/syscall.h>
#define MAXE 256
static struct { const char *fn; char lib[200]; int main; long n; } E[MAXE];
static int NE; static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void note(const char *fn, void *ra) {
  Dl_info di; const char *lib = "?";
  if (dladdr(ra, &di) && di.dli_fname) lib = di.dli_fname;
  int m = syscall(SYS_gettid) == getpid();
  pthread_mutex_lock(&mu);
  int i; for (i = 0; i < NE; i++) if (E[i].fn == fn && E[i].main == m && !strncmp(E[i].lib, lib, 199)) break;
  if (i == NE && NE < MAXE) { E[i].fn = fn; strncpy(E[i].lib, lib, 199); E[i].main = m; NE++; }
  if (i < MAXE) E[i].n++;
  pthread_mutex_unlock(&mu);
}
__attribute__((destructor)) static void dump(void) {
  char p[64]; snprintf(p, sizeof p, "/tmp/rand_callers.%d.txt", getpid());
  FILE *f = fopen(p, "w"); if (!f) return;
  for (int i = 0; i < NE; i++) fprintf(f, "%s main=%d n=%ld %s\n", E[i].fn, E[i].main, E[i].n, E[i].lib);
  fclose(f);
}
#define WRAP(ret, name, params, args, rettype) \
  ret name params { static ret (*real) params; if (!real) real = dlsym(RTLD_NEXT, #name); note(#name, __builtin_return_address(0)); return real args; }
WRAP(int, rand, (void), (), int)
WRAP(long, random, (void), (), long)
void srand(unsigned s) { static void (*real)(unsigned); if (!real) real = dlsym(RTLD_NEXT, "srand"); note("srand", __builtin_return_address(0)); real(s); }
void srandom(unsigned s) { static void (*real)(unsigned); if (!real) real = dlsym(RTLD_NEXT, "srandom"); note("srandom", __builtin_return_address(0)); real(s); }
