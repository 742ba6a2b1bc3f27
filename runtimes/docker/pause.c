/*
 * pause: PID 1 of a pod sandbox (the infra container of the Docker-backed runtime).
 *
 * Sleeps until SIGINT or SIGTERM (then exits 0) and reaps any zombie
 * children re-parented to it (SIGCHLD).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;

static void on_stop(int signo) {
    (void)signo;
    stop_requested = 1;
}

static void on_child(int signo) {
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int install(int signo, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: pause\n");
        return 2;
    }
    if (install(SIGINT, on_stop) < 0 || install(SIGTERM, on_stop) < 0 ||
        install(SIGCHLD, on_child) < 0) {
        perror("sigaction");
        return 1;
    }
    /* Block the stop signals while checking the flag so none is lost. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    while (!stop_requested) {
        sigsuspend(&old);
    }
    return 0;
}
