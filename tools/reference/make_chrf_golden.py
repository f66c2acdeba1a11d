"""chrF goldens for tune compare's reference scores, from sacreBLEU.

    pip install sacrebleu==2.6.0
    python tools/reference/make_chrf_golden.py

Writes tests/data/chrf/golden.json: pairs of (hypothesis, reference) with
sacreBLEU's default sentence chrF, and the corpus chrF over all of them. The
pairs mix hand-written edge cases (empty strings, whitespace only, repeated
n-grams, strings shorter than the n-gram order, non-BMP characters) with
answers from the Korean Excel dataset scored against other records'
references, so both near and far pairs occur.
"""
import json
import os
import random

from sacrebleu.metrics import CHRF

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EDGE = [
    ("", ""),
    ("", "reference"),
    ("hypothesis", ""),
    ("   \t\n", "a b"),
    ("a", "a"),
    ("ab", "abc"),
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the the the the", "the cat"),
    ("aaaaaaa", "aaa"),
    ("=VLOOKUP(A2, $F$2:$G$100, 2, FALSE)", "=VLOOKUP(A2,$F$2:$G$100,2,FALSE)"),
    ("=SUMIFS(C:C, A:A, \"서울\")", "=SUMIF(A:A, \"서울\", C:C)"),
    ("엑셀에서 합계를 구하려면 SUM을 씁니다.", "합계는 =SUM(A1:A10)으로 구합니다."),
    ("한글\u3000전각\u00a0공백\u2003", "한글 전각 공백"),
    ("emoji 😀📊 표", "📊 표 emoji"),
    ("Straße ﬁle", "strasse file"),
]


def main():
    chrf = CHRF()
    records = [json.loads(line) for line in open(os.path.join(ROOT, "datasets/excel_expert/eval.jsonl"), encoding="utf-8")]
    rng = random.Random(7)
    pairs = list(EDGE)
    for i, rec in enumerate(records[:12]):
        other = records[rng.randrange(len(records))]
        pairs.append((other["output"], rec["output"]))
        pairs.append((rec["output"][: len(rec["output"]) // 2], rec["output"]))
    out = {
        "pairs": [
            {"hyp": h, "ref": r, "chrf": chrf.sentence_score(h, [r]).score} for h, r in pairs
        ],
        "corpus_chrf": chrf.corpus_score([h for h, _ in pairs], [[r for _, r in pairs]]).score,
    }
    out = {"sacrebleu": chrf.get_signature().format(), **out}
    path = os.path.join(ROOT, "tests/data/chrf/golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(pairs)} pairs, corpus chrF {out['corpus_chrf']:.4f}")


if __name__ == "__main__":
    main()
