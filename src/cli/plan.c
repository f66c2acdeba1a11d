#include "tune/cli.h"

int tune_cli_plan(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return tune_cli_usage_error("plan", "plan is not built yet");
}
