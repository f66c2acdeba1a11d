#include "tune/cli.h"

int tune_cli_train(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return tune_cli_usage_error("train", "training is not built yet");
}
