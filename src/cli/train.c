/* tune train CONFIG [overrides]  (also: tune CONFIG.yml) */
#include <stdio.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/plan.h"

int tune_cli_train(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        printf("usage: tune train CONFIG.yml [--key value ...]\n"
               "       tune CONFIG.yml [--key value ...]\n\n"
               "Trains a LoRA adapter as the config describes. Any config key can be\n"
               "overridden: --learning_rate 5e-5, --set datasets.0.path=x.jsonl, and the short\n"
               "flags --model, --dataset, --output_dir, --epochs, --batch_size, --lr, --lora_r.\n"
               "Writes OUTPUT_DIR/config_resolved.yml first (see 'tune config keys').\n");
        return 0;
    }
    tune_config cfg;
    int rc = tune_cli_load_config("train", argc - 1, argv + 1, &cfg);
    if (rc) return rc;
    tune_plan plan;
    tune_error_list errs = {0};
    tune_status st = tune_plan_init(&plan, &cfg, &errs);
    for (int i = 0; i < errs.count; i++) tune_error_print(stderr, &errs.items[i]);
    tune_error_list_free(&errs);
    if (st == TUNE_OK) {
        tune_error err;
        char path[4200];
        snprintf(path, sizeof path, "%s/config_resolved.yml", plan.output_dir);
        st = tune_mkdir_p(plan.output_dir, &err);
        if (st == TUNE_OK) st = tune_config_write_resolved(&cfg, path, &err);
        if (st != TUNE_OK) {
            tune_error_print(stderr, &err);
        } else {
            printf("tune: wrote %s\n", path);
            fprintf(stderr, "tune: error: training itself is not built yet (config and plan are checked)\n");
            st = TUNE_ERR_RUN;
        }
        tune_plan_free(&plan);
    }
    tune_config_free(&cfg);
    return (int)st;
}
