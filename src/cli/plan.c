/* tune plan CONFIG [--json] [--ranks N] [overrides] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/parallel.h"
#include "tune/plan.h"

int tune_cli_plan(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        printf("usage: tune plan CONFIG.yml [--json] [--ranks N] [--key value ...]\n\n"
               "Resolves the config (with any overrides) and prints the training plan: paths,\n"
               "LoRA targets and trainable parameters, examples and tokens, steps, warmup,\n"
               "save/eval steps, schedule, memory estimate, and warnings. The counts come from\n"
               "running the data stage (through the prepared-data cache); when the data cannot\n"
               "be prepared the plan says why and shows those numbers as unknown.\n"
               "--json prints the same as JSON. --ranks N plans N data-parallel ranks (mpirun\n"
               "-np N: each takes gradient_accumulation_steps micro-batches of a step); under\n"
               "mpirun the plan is that of its ranks, printed by rank 0.\n");
        return 0;
    }
    if (tune_parallel_env_rank() > 0) return 0; /* under mpirun, rank 0 prints the plan */
    /* Drop --json and --ranks N; the rest is the config and its overrides. */
    int json = 0, n = 0, ranks = tune_parallel_env_size();
    char **args = malloc((size_t)argc * sizeof *args);
    if (!args) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--ranks")) {
            char *end = NULL;
            const long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (!end || *end || v < 1 || v > 1 << 20) {
                free(args);
                return tune_cli_usage_error("plan", "--ranks needs a number of ranks (1 or more)");
            }
            ranks = (int)v;
            i++;
        } else {
            args[n++] = argv[i];
        }
    }
    tune_config cfg;
    tune_plan plan;
    int rc = tune_cli_load_plan("plan", n, args, &cfg, &plan);
    free(args);
    if (rc) return rc;
    tune_plan_set_ranks(&plan, ranks);
    /* Real counts when the data can be prepared; the plan records why not otherwise. */
    tune_plan_data data;
    tune_plan_prepare_data(&plan, &cfg, 0, &data, NULL);
    tune_plan_data_free(&data);
    if (json) {
        char *text;
        tune_error err;
        if (tune_plan_to_json(&plan, &text, &err) != TUNE_OK) {
            tune_error_print(stderr, &err);
            rc = 1;
        } else {
            printf("%s\n", text);
            free(text);
        }
    } else {
        tune_strbuf sb = {0};
        printf("tune plan for %s\n\n", cfg.config_path);
        if (tune_plan_format(&plan, &sb) != TUNE_OK) {
            fprintf(stderr, "tune: error: out of memory\n");
            rc = 1;
        } else {
            fwrite(sb.data, 1, sb.len, stdout);
        }
        tune_strbuf_free(&sb);
    }
    tune_plan_free(&plan);
    tune_config_free(&cfg);
    return rc;
}
