/* tune train CONFIG [overrides]  (also: tune CONFIG.yml)
 * config → plan → tune_plan_train (data → model + LoRA → training loop);
 * this file parses and prints. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tune/cli.h"
#include "tune/parallel.h"
#include "tune/plan.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune train CONFIG.yml [--key value ...]\n"
            "       tune CONFIG.yml [--key value ...]\n\n"
            "Trains a LoRA adapter as the config describes. Any config key can be\n"
            "overridden: --learning_rate 5e-5, --set datasets.0.path=x.jsonl, and the short\n"
            "flags --model, --dataset, --output_dir, --epochs, --batch_size, --lr, --lora_r.\n\n"
            "Writes into output_dir: config_resolved.yml (running tune on it reproduces the\n"
            "run), checkpoint-N/ every save interval, training_log.jsonl, loss.svg, and at the\n"
            "end adapter_model.safetensors + adapter_config.json (PEFT format),\n"
            "trainer_state.json and run_manifest.json; with tokens / special_tokens added\n"
            "to the vocabulary also tokenizer.json (load the base model, resize its\n"
            "embeddings to len(tokenizer), then the adapter). resume_from_checkpoint and\n"
            "auto_resume_from_checkpoints continue an interrupted run to the same adapter.\n\n"
            "SIGINT or SIGTERM (Ctrl-C, a scheduler's stop) during training: the step in\n"
            "progress finishes, a checkpoint is written, the command that resumes is\n"
            "printed, and tune exits 130 (SIGINT) or 143 (SIGTERM); a second signal ends it\n"
            "at once. Exit status: 0 done, 1 failure while running, 2 bad input.\n\n"
            "Data parallelism (a build with `make MPI=1`): mpirun -np N tune CONFIG.yml runs\n"
            "N ranks, each taking gradient_accumulation_steps micro-batches of every step;\n"
            "the adapter equals that of one process with gradient_accumulation_steps x N,\n"
            "byte for byte. Rank 0 prints and writes (docs/parallel.md).\n");
}

/* SIGINT/SIGTERM during training: the first asks the loop to stop after its
 * step (checkpoint, then exit 128 + the signal); a second ends the process
 * at once, by the signal. Caught only once training starts: before that,
 * dying at once loses nothing (every file is written atomically). Atomic:
 * while one signal is pending on a thread the kernel hands the next to
 * another, so two handlers can run at once, and exactly one of them must
 * be the first. */
static atomic_int got_signal;

/* With several ranks, what the handler says at once: the signal may come
 * from mpirun ending the job because another rank failed, and then this
 * rank never finishes its step (mpirun kills it). */
static char rank_stop_line[160];

static void on_stop_signal(int sig)
{
    int none = 0;
    if (!atomic_compare_exchange_strong(&got_signal, &none, sig)) {
        signal(sig, SIG_DFL);
        raise(sig); /* delivered when this handler returns */
        return;
    }
    if (rank_stop_line[0]) {
        const ssize_t w = write(STDERR_FILENO, rank_stop_line, strlen(rank_stop_line)); /* async-signal-safe */
        (void)w; /* nothing to do if stderr is gone */
    }
    tune_train_request_stop();
}

/* A signal ignored when tune started (SIGINT for a shell's background job,
 * say) stays ignored. The handler masks both on the thread it runs on. */
static void catch_stop_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM};
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 2; i++) sigaddset(&sa.sa_mask, sigs[i]);
    for (int i = 0; i < 2; i++)
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(sigs[i], &sa, NULL);
}

/* arg as one shell word: as it is when that is safe, else in single quotes. */
static void put_shell_word(FILE *out, const char *arg)
{
    if (*arg && strspn(arg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+=.,/:@%") ==
                    strlen(arg)) {
        fputs(arg, out);
        return;
    }
    fputc('\'', out);
    for (; *arg; arg++) {
        if (*arg == '\'') fputs("'\\''", out);
        else fputc(*arg, out);
    }
    fputc('\'', out);
}

/* The command line of this run (args: the config and overrides) with the
 * checkpoint to resume from added last, where it overrides any other. */
static void print_resume_command(int ranks, int argc, char **argv, const char *checkpoint)
{
    fputs("tune: resume with: ", stderr);
    if (ranks > 1) fprintf(stderr, "mpirun -np %d ", ranks); /* any number of ranks may resume it */
    put_shell_word(stderr, program_invocation_name);
    fputs(" train", stderr);
    for (int i = 0; i < argc; i++) {
        fputc(' ', stderr);
        put_shell_word(stderr, argv[i]);
    }
    fputs(" --resume_from_checkpoint ", stderr);
    put_shell_word(stderr, checkpoint);
    fputc('\n', stderr);
}

/* Progress on stderr: a bar redrawn in place on a terminal, log lines otherwise. */
typedef struct progress {
    int tty;
    int bar_drawn;
    int quiet; /* a rank other than 0: rank 0 reports for all */
} progress;

static void on_event(void *ctx, const tune_train_event *ev)
{
    progress *p = ctx;
    if (ev->kind == TUNE_EVENT_START) catch_stop_signals();
    char line[512];
    tune_train_format_event(ev, p->tty, line, sizeof line);
    if (!line[0] || p->quiet) return;
    if (p->tty && ev->kind == TUNE_EVENT_STEP) {
        fprintf(stderr, "\r%s", line);
        p->bar_drawn = 1;
    } else {
        fprintf(stderr, "%s%s\n", p->bar_drawn ? "\n" : "", line);
        p->bar_drawn = 0;
    }
    fflush(stderr);
}

/* A failure on this rank: rank 0 reports what every rank agreed on, each
 * rank its own failures ("tune: rank R: ..."). */
static void print_error(const tune_parallel *par, const tune_error *err)
{
    const int rank = tune_parallel_rank(par);
    if (rank > 0 && tune_parallel_agreed(par)) return;
    if (rank == 0) {
        tune_error_print(stderr, err);
        return;
    }
    char line[2048];
    tune_error_format(err, line, sizeof line);
    fprintf(stderr, "tune: rank %d: error: %s\n", rank, line);
}

/* args: the config file and its overrides, for the resume command. */
static int train(tune_plan *plan, const tune_config *cfg, int argc, char **args)
{
    const int rank0 = tune_parallel_rank(plan->parallel) == 0;
    if (plan->ranks > 1)
        snprintf(rank_stop_line, sizeof rank_stop_line,
                 "tune: rank %d: stop signal: finishing this step with the other ranks (if one of them died, mpirun "
                 "ends this rank; written checkpoints stay intact)\n",
                 tune_parallel_rank(plan->parallel));
    progress prog = {.tty = isatty(STDERR_FILENO), .quiet = !rank0};
    const tune_run_hooks hooks = {.ctx = &prog, .on_planned = rank0 ? tune_cli_on_planned : NULL,
                                  .on_note = rank0 ? tune_cli_on_note : NULL, .on_event = on_event};
    tune_error err;
    tune_error_clear(&err);
    const tune_status st = tune_plan_train(plan, cfg, args[0], tune_cli_version(), &hooks, &err);
    if (st && prog.bar_drawn) fputc('\n', stderr);
    const int sig = atomic_load(&got_signal);
    if (st == TUNE_INTERRUPTED && !rank0) return 128 + (sig ? sig : SIGTERM);
    if (st == TUNE_INTERRUPTED) {
        fprintf(stderr, "tune: %s received: %s; the checkpoint is %s\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
                err.message, err.file);
        print_resume_command(plan->ranks, argc, args, err.file);
        return 128 + (sig ? sig : SIGTERM);
    }
    if (st) {
        print_error(plan->parallel, &err);
        return err.code ? (int)err.code : 1;
    }
    if (rank0) printf("tune: adapter written to %s\n", plan->output_dir);
    return 0;
}

int tune_cli_train(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    tune_parallel *par;
    tune_error err;
    tune_error_clear(&err);
    if (tune_parallel_start(&par, &err)) {
        tune_error_print(stderr, &err);
        return (int)err.code;
    }
    tune_config cfg;
    tune_plan plan;
    int rc = tune_cli_load_plan("train", argc - 1, argv + 1, &cfg, &plan);
    /* A rank whose config does not load stops every rank (its errors are printed above). */
    if (rc) tune_error_set(&err, (tune_status)rc, NULL, 0, 0, "the config could not be loaded");
    if (tune_parallel_agree(par, (tune_status)rc, &err) && !rc) {
        print_error(par, &err);
        tune_plan_free(&plan);
        tune_config_free(&cfg);
        rc = (int)err.code;
    } else if (!rc) {
        plan.parallel = par;
        tune_plan_set_ranks(&plan, tune_parallel_size(par));
        rc = train(&plan, &cfg, argc - 1, argv + 1);
        tune_plan_free(&plan);
        tune_config_free(&cfg);
    }
    /* Interrupted (128 + signal): every rank stopped after the same step. */
    tune_parallel_end(par, rc != 0 && rc < 128, rc);
    return rc;
}
