/* tune plan CONFIG [--json] [overrides] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/plan.h"

int tune_cli_plan(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        printf("usage: tune plan CONFIG.yml [--json] [--key value ...]\n\n"
               "Resolves the config (with any overrides) and prints the training plan: paths,\n"
               "LoRA targets and trainable parameters, examples and tokens, steps, warmup,\n"
               "save/eval steps, schedule, memory estimate, and warnings. The counts come from\n"
               "running the data stage (through the prepared-data cache); when the data cannot\n"
               "be prepared the plan says why and shows those numbers as unknown.\n"
               "--json prints the same as JSON.\n");
        return 0;
    }
    /* Drop --json; the rest is the config and its overrides. */
    int json = 0, n = 0;
    char **args = malloc((size_t)argc * sizeof *args);
    if (!args) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else args[n++] = argv[i];
    }
    tune_config cfg;
    tune_plan plan;
    int rc = tune_cli_load_plan("plan", n, args, &cfg, &plan);
    free(args);
    if (rc) return rc;
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
