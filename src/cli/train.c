/* tune train CONFIG [overrides]  (also: tune CONFIG.yml)
 * config → plan → tune_plan_train (data → model + LoRA → training loop);
 * this file parses and prints. */
#include <stdio.h>
#include <unistd.h>

#include "tune/cli.h"
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
            "auto_resume_from_checkpoints continue an interrupted run to the same adapter.\n");
}

/* Progress on stderr: a bar redrawn in place on a terminal, log lines otherwise. */
typedef struct progress {
    int tty;
    int bar_drawn;
} progress;

static void on_event(void *ctx, const tune_train_event *ev)
{
    progress *p = ctx;
    char line[512];
    tune_train_format_event(ev, p->tty, line, sizeof line);
    if (!line[0]) return;
    if (p->tty && ev->kind == TUNE_EVENT_STEP) {
        fprintf(stderr, "\r%s", line);
        p->bar_drawn = 1;
    } else {
        fprintf(stderr, "%s%s\n", p->bar_drawn ? "\n" : "", line);
        p->bar_drawn = 0;
    }
    fflush(stderr);
}

static int train(tune_plan *plan, const tune_config *cfg, const char *config_path)
{
    progress prog = {.tty = isatty(STDERR_FILENO)};
    const tune_run_hooks hooks = {.ctx = &prog, .on_planned = tune_cli_on_planned, .on_note = tune_cli_on_note, .on_event = on_event};
    tune_error err;
    tune_error_clear(&err);
    if (tune_plan_train(plan, cfg, config_path, tune_cli_version(), &hooks, &err)) {
        if (prog.bar_drawn) fputc('\n', stderr);
        tune_error_print(stderr, &err);
        return err.code ? (int)err.code : 1;
    }
    printf("tune: adapter written to %s\n", plan->output_dir);
    return 0;
}

int tune_cli_train(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    tune_config cfg;
    tune_plan plan;
    int rc = tune_cli_load_plan("train", argc - 1, argv + 1, &cfg, &plan);
    if (rc) return rc;
    rc = train(&plan, &cfg, argv[1]);
    tune_plan_free(&plan);
    tune_config_free(&cfg);
    return rc;
}
