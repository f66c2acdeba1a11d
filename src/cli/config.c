#include "tune/cli.h"

int tune_cli_config(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return tune_cli_usage_error("config", "config tools are not built yet");
}
