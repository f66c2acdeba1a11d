/* Merging a PEFT LoRA adapter into a model's weights (W' = W + scaling·B·A)
 * and writing the result as a Hugging Face model folder. */
#ifndef TUNE_MERGE_H
#define TUNE_MERGE_H

#include "tune/error.h"
#include "tune/lora.h"
#include "tune/model.h"
#include "tune/safetensors.h"
#include "tune/util.h"

/* W += scaling · B·A for every module of lora, in fp32, in place, and the
 * saved copies (modules_to_save) in place of embed_tokens / lm_head: what
 * PEFT's merge_and_unload does. lora was made for this model (for saved
 * copies, by tune_lora_open_peft, which grew and untied it). */
void tune_lora_merge(tune_model *model, const tune_lora *lora); /* model stored in fp32 (TUNE_STORE_F32) */

/* Loads a PEFT LoRA adapter folder with tune_lora_open_peft (lora.h, which
 * refuses what plain LoRA weights cannot represent: DoRA, rank patterns,
 * ...) and merges it into model. */
tune_status tune_merge_peft_adapter(tune_model *model, const char *adapter_dir, tune_error *err);

/* Writes model as a Hugging Face folder out_dir: config.json (the base
 * folder's with vocab_size and tie_word_embeddings brought up to date, or
 * made from a GGUF file's hyperparameters), model.safetensors in dtype
 * (TUNE_DT_BF16 or TUNE_DT_F32; tied embeddings stay tied),
 * generation_config.json, and the tokenizer: adapter_dir's files when it has
 * a tokenizer.json (added tokens), else the base folder's, or for a GGUF base
 * tokenizer.json + tokenizer_config.json built from its metadata. The folder
 * is built in out_dir.tmp and renamed, so out_dir is complete or absent;
 * out_dir must not exist. base_path is the model the weights came from;
 * adapter_dir may be NULL. What is missing (a base folder without tokenizer
 * files) is described in notes, one line each. */
tune_status tune_merge_save_hf(const tune_model *model, const char *base_path, const char *adapter_dir,
                               const char *out_dir, tune_dtype dtype, tune_strbuf *notes, tune_error *err);

#endif
