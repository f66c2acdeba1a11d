/* The chat page GET / serves: src/serve/chat.html, as bytes the Makefile writes. */
#include "tune/serve.h"

const unsigned char tune_serve_chat_page[] = {
#include "chat_page.h"
};
const size_t tune_serve_chat_page_len = sizeof tune_serve_chat_page;
