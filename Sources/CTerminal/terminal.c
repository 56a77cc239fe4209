#include "CTerminal.h"
#include <sys/ioctl.h>
#include <unistd.h>

int cb_terminal_columns(int fd) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) != 0) return 0;
    return ws.ws_col;
}

#include <signal.h>
#include <string.h>

// A run (`chatbatch run`, `chatbatch demo`) blocks its stop signals from the process's first instruction, before
// the Swift runtime starts: one that arrives while the run opens its files stays pending, and the run's signal
// sources (libdispatch reads them through a signalfd, which wants them blocked) take it as their first event.
// Other commands keep the default actions.
__attribute__((constructor)) static void cb_block_stop_signals(int argc, char **argv, char **envp) {
    (void)envp;
    if (argc < 2 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "demo") != 0)) return;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    sigprocmask(SIG_BLOCK, &set, NULL);
}
