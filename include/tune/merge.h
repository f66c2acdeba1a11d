/* Merging a PEFT LoRA adapter into a model's weights (W' = W + scaling·B·A)
 * and writing the result as a Hugging Face model folder. */
#ifndef TUNE_MERGE_H
#define TUNE_MERGE_H

#include "tune/error.h"
#include "tune/lora.h"
#include "tune/model.h"
#include "tune/safetensors.h"
#include "tune/util.h"

/* W += scaling · B·A for every module of lora, in fp32, in place: what
 * PEFT's merge_and_unload does. lora was created for this model. */
void tune_lora_merge(tune_model *model, const tune_lora *lora);

/* Loads a PEFT LoRA adapter folder with tune_lora_load_peft (lora.h, which
 * refuses what plain LoRA weights cannot represent: DoRA, rank patterns,
 * modules_to_save, ...) and merges it into model. */
tune_status tune_merge_peft_adapter(tune_model *model, const char *adapter_dir, tune_error *err);

/* Writes model as a Hugging Face folder out_dir: config.json (the base
 * folder's, or made from a GGUF file's hyperparameters), model.safetensors in
 * dtype (TUNE_DT_BF16 or TUNE_DT_F32; tied embeddings stay tied),
 * generation_config.json, and the tokenizer files of a base folder. The
 * folder is built in out_dir.tmp and renamed, so out_dir is complete or
 * absent; out_dir must not exist. base_path is the model the weights came
 * from. What could not be written (a GGUF base's tokenizer) is described in
 * notes, one line each. */
tune_status tune_merge_save_hf(const tune_model *model, const char *base_path, const char *out_dir,
                               tune_dtype dtype, tune_strbuf *notes, tune_error *err);

#endif
