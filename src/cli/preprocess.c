/* tune preprocess CONFIG [--debug N] [--batches FILE [--steps N]] [overrides]:
 * runs the data stage and writes what it made, for a person to check before
 * training, or for another trainer to train on the same micro-batches. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tune/cli.h"
#include "tune/data.h"
#include "tune/plan.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune preprocess CONFIG.yml [--debug N] [--batches FILE [--steps N]] [--key value ...]\n\n"
            "Reads, formats and tokenizes the config's datasets as training would, and writes\n"
            "  OUTPUT_DIR/processed_conversations.json  per example: rendered text, input_ids, labels\n"
            "                                           (-100 = not trained)\n"
            "  OUTPUT_DIR/preprocess_report.json        records read, skipped (with reasons), examples,\n"
            "                                           tokens, trained tokens, truncated, dropped\n"
            "and fills the prepared-data cache (dataset_prepared_path).\n"
            "--debug N prints the first N examples token by token: trained tokens in green\n"
            "(in [brackets] when the output is not a terminal), masked ones plain.\n"
            "--batches FILE also writes the micro-batches training takes, in its order (shuffle,\n"
            "epochs, packing, gradient accumulation), as safetensors: per micro-batch K\n"
            "input_ids.K, labels.K, position_ids.K, segment_ids.K (int32, B x T), and per\n"
            "micro-batch its step, epoch, index and trained targets; --steps N: only the first\n"
            "N optimizer steps' (default and at most: every step of the run).\n");
}

/* argv[i + 1] as a count of at least min into *out; 0 when it is not one. */
static int count_arg(int argc, char **argv, int i, long min, long *out)
{
    char *end;
    if (i + 1 >= argc) return 0;
    errno = 0;
    *out = strtol(argv[i + 1], &end, 10);
    return !errno && end != argv[i + 1] && !*end && *out >= min;
}

static int fail(const tune_error *err)
{
    tune_error_print(stderr, err);
    return err->code ? (int)err->code : 1;
}

int tune_cli_preprocess(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    long debug = 0, steps = 0;
    const char *batches = NULL;
    int n = 0;
    char **args = malloc(((size_t)argc + 1) * sizeof *args);
    if (!args) return 1;
    for (int i = 1; i < argc; i++) {
        const char *bad = NULL;
        if (!strcmp(argv[i], "--debug")) {
            if (!count_arg(argc, argv, i++, 0, &debug)) bad = "--debug needs a count of examples";
        } else if (!strcmp(argv[i], "--steps")) {
            if (!count_arg(argc, argv, i++, 1, &steps)) bad = "--steps needs a count of optimizer steps (1 or more)";
        } else if (!strcmp(argv[i], "--batches")) {
            if (i + 1 >= argc || !argv[i + 1][0]) bad = "--batches needs a file name";
            else batches = argv[++i];
        } else {
            args[n++] = argv[i];
        }
        if (bad) {
            free(args);
            return tune_cli_usage_error("preprocess", "%s", bad);
        }
    }
    if (steps && !batches) {
        free(args);
        return tune_cli_usage_error("preprocess", "--steps is for --batches");
    }
    tune_config cfg;
    tune_plan plan;
    int rc = tune_cli_load_plan("preprocess", n, args, &cfg, &plan);
    free(args);
    if (rc) return rc;
    tune_status st;
    tune_error err;
    tune_error_clear(&err);
    tune_plan_data data;
    tune_prepared *prep = &data.prep;
    char path[4096];
    if ((st = tune_plan_prepare_data(&plan, &cfg, 1, &data, &err)) || (st = tune_mkdir_p(plan.output_dir, &err))) {
        rc = fail(&err);
        goto done;
    }
    snprintf(path, sizeof path, "%s/processed_conversations.json", plan.output_dir);
    if ((st = tune_data_write_processed(prep, path, &err))) {
        rc = fail(&err);
        goto done;
    }
    snprintf(path, sizeof path, "%s/preprocess_report.json", plan.output_dir);
    if ((st = tune_data_write_report(prep, path, &err))) {
        rc = fail(&err);
        goto done;
    }
    if (batches && (st = tune_plan_write_batches(&plan, &data, batches, steps, &err))) {
        rc = fail(&err);
        goto done;
    }
    tune_cli_print_warnings(&plan);
    tune_strbuf sb = {0};
    tune_data_report_text(prep, &sb);
    int color = isatty(STDOUT_FILENO);
    for (long i = 0; i < debug && (size_t)i < prep->train.count + prep->val.count && !st; i++) {
        tune_strbuf_puts(&sb, "\n");
        st = tune_data_debug_example(prep, (size_t)i, &data.dtok, color, &sb, &err);
    }
    if (st) rc = fail(&err);
    else if (sb.oom) rc = 1;
    else {
        fwrite(sb.data, 1, sb.len, stdout);
        printf("\nwrote %s/processed_conversations.json and %s/preprocess_report.json\n", plan.output_dir,
               plan.output_dir);
        if (batches && steps && steps < plan.total_steps)
            printf("wrote the micro-batches of the first %ld steps to %s\n", steps, batches);
        else if (batches) printf("wrote the micro-batches of every step to %s\n", batches);
    }
    tune_strbuf_free(&sb);
done:
    tune_plan_data_free(&data);
    tune_plan_free(&plan);
    tune_config_free(&cfg);
    return rc;
}
