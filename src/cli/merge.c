#include <stdio.h>
#include <string.h>

#include "tune/cli.h"
#include "tune/merge.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tune merge MODEL ADAPTER OUT [--dtype bf16|f32]\n\n"
            "Merges a PEFT LoRA adapter into its base model (W' = W + scaling·B·A for every adapted\n"
            "layer) and writes a Hugging Face folder OUT/: config.json, model.safetensors,\n"
            "generation_config.json and the base's tokenizer files. OUT must not exist; it is\n"
            "built in OUT.tmp and renamed when complete.\n\n"
            "  MODEL          Hugging Face folder or .gguf file the adapter was trained on\n"
            "  ADAPTER        folder with adapter_config.json and adapter_model.safetensors\n"
            "  --dtype T      bf16 (default) or f32\n");
}

int tune_cli_merge(int argc, char **argv)
{
    if (tune_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *pos[3];
    int n_pos = 0;
    tune_dtype dtype = TUNE_DT_BF16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dtype")) {
            if (++i >= argc) return tune_cli_usage_error("merge", "--dtype needs a value (bf16 or f32)");
            if (!strcmp(argv[i], "bf16") || !strcmp(argv[i], "bfloat16")) dtype = TUNE_DT_BF16;
            else if (!strcmp(argv[i], "f32") || !strcmp(argv[i], "float32")) dtype = TUNE_DT_F32;
            else return tune_cli_usage_error("merge", "--dtype must be bf16 or f32, not '%s'", argv[i]);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tune_cli_usage_error("merge", "unknown option '%s' (try 'tune merge --help')", argv[i]);
        } else if (n_pos < 3) {
            pos[n_pos++] = argv[i];
        } else {
            return tune_cli_usage_error("merge", "too many arguments: expected MODEL ADAPTER OUT");
        }
    }
    if (n_pos < 3) return tune_cli_usage_error("merge", "expected MODEL ADAPTER OUT (try 'tune merge --help')");
    tune_error err;
    tune_model model;
    tune_strbuf notes = {0};
    tune_status st = tune_model_load(pos[0], &model, &err);
    if (st == TUNE_OK) {
        st = tune_merge_peft_adapter(&model, pos[1], &err);
        if (st == TUNE_OK) st = tune_merge_save_hf(&model, pos[0], pos[1], pos[2], dtype, &notes, &err);
        tune_model_free(&model);
    }
    if (st != TUNE_OK) {
        tune_error_print(stderr, &err);
        tune_strbuf_free(&notes);
        return st;
    }
    if (notes.len) fprintf(stderr, "tune merge: note: %s", notes.data);
    fprintf(stderr, "tune merge: wrote %s (%s weights)\n", pos[2], dtype == TUNE_DT_BF16 ? "bf16" : "f32");
    tune_strbuf_free(&notes);
    return 0;
}
