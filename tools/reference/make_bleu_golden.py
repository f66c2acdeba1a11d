"""BLEU goldens for tune's answer scores (compare, bench-serve), from sacreBLEU.

    pip install sacrebleu==2.6.0
    python tools/reference/make_bleu_golden.py

Writes tests/data/bleu/golden.json: pairs of (hypothesis, reference) with
sacreBLEU's sentence BLEU (BLEU(effective_order=True), its advice for single
sentences) and the corpus BLEU (BLEU(), the default) over all of them. The
pairs are the chrF goldens' (tests/data/chrf/golden.json) and cases aimed at
the 13a tokenizer: punctuation, numbers with periods, commas and dashes,
HTML entities, line breaks, trailing and Unicode whitespace.
"""
import json
import os

from sacrebleu.metrics import BLEU

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOKENIZER = [
    ("Hello, world. It costs $3.50, or 3,000 won.", "Hello world. It costs 3.50 dollars, or 3,000 won."),
    ("1990-2000 A-B 3-4-5 x.y 1.2.3 a,b,c .5 5.", "1990 - 2000 A-B 3-4-5 x.y 1.2.3 a, b, c .5 5."),
    ("&quot;quoted&quot; &amp; &lt;tag&gt; &amp;lt;", "\"quoted\" & <tag> &lt;"),
    ("line one-\nline two\nline three", "line oneline two line three"),
    ("<skipped> trailing spaces   \u3000\n", "trailing spaces"),
    ("=IF(A1>0,\"yes\",\"no\")", "=IF(A1>0, \"yes\", \"no\")"),
    ("{braces} [brackets] (parens) 'quotes' `ticks` ~tilde| ^caret_ @at #hash %pct",
     "{braces} [brackets] (parens) quotes ticks tilde caret at hash pct"),
    ("한국어 문장입니다. 숫자 1,234.5와 함께.", "한국어 문장입니다. 숫자 1,234.5 와 함께."),
    ("a", "a b c d e"),
    ("the cat", "the cat sat on the mat"),
    ("x y z", "a b c"),
]


def main():
    chrf = json.load(open(os.path.join(ROOT, "tests/data/chrf/golden.json"), encoding="utf-8"))
    pairs = [(p["hyp"], p["ref"]) for p in chrf["pairs"]] + TOKENIZER
    sentence = BLEU(effective_order=True)
    corpus = BLEU()
    scores = [{"hyp": h, "ref": r, "bleu": sentence.sentence_score(h, [r]).score} for h, r in pairs]
    total = corpus.corpus_score([h for h, _ in pairs], [[r for _, r in pairs]]).score
    out = {"sacrebleu": corpus.get_signature().format(), "pairs": scores, "corpus_bleu": total}
    path = os.path.join(ROOT, "tests/data/bleu/golden.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(pairs)} pairs, corpus BLEU {out['corpus_bleu']:.4f}")


if __name__ == "__main__":
    main()
