#!/usr/bin/env python3
"""Writes the Korean Excel assistant dataset: datasets/excel_expert/.

Needs only the Python standard library. Deterministic: the same script gives
the same files byte for byte.

Each record is what the product's export endpoint gives for one collected
conversation: an instruction (the user's request), an optional input (the
sheet layout or the formula in question), the assistant's answer, and the
metadata the export filters act on (task_type, quality_score, rating,
edited). Scenarios are written by hand below; every formula in an answer is
built from the same column letters and ranges the question names, so
answers stay correct across the variations.

    python3 tools/dataset/make_excel_expert.py            # writes the files
"""
import json
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "excel_expert")

BRANCHES = ["서울", "부산", "대구", "인천", "광주", "대전", "수원", "울산"]
PRODUCTS = ["노트북", "모니터", "키보드", "마우스", "프린터", "태블릿", "헤드셋", "웹캠"]
DEPTS = ["영업팀", "인사팀", "재무팀", "개발팀", "마케팅팀", "총무팀"]
NAMES = ["김민준", "이서연", "박지호", "최수아", "정우진", "강하은", "윤도현", "임지우", "한예린", "오승민"]
MONTHS = [f"{m}월" for m in range(1, 13)]
ITEMS = ["A4 용지", "토너", "볼펜", "파일철", "USB 메모리", "배터리", "스테이플러", "포스트잇"]


def col_range(col, first, last):
    return f"{col}{first}:{col}{last}"


def records_sumifs(rng):
    out = []
    for i in range(30):
        last = rng.choice([50, 100, 120, 200, 365, 500])
        branch = BRANCHES[i % len(BRANCHES)]
        product = PRODUCTS[(i * 3) % len(PRODUCTS)]
        month = MONTHS[i % 12]
        two_conditions = i % 2 == 0
        layout = (f"A열: 월, B열: 지점, C열: 제품, D열: 판매수량, E열: 매출액(원). "
                  f"데이터는 2행부터 {last}행까지 있습니다.")
        if two_conditions:
            instr = f"{month} {branch} 지점의 {product} 매출 합계를 구하는 수식을 알려주세요."
            formula = (f'=SUMIFS({col_range("E", 2, last)}, {col_range("A", 2, last)}, "{month}", '
                       f'{col_range("B", 2, last)}, "{branch}", {col_range("C", 2, last)}, "{product}")')
            answer = (f"SUMIFS 함수로 세 가지 조건(월, 지점, 제품)을 동시에 만족하는 매출액만 더하면 됩니다.\n\n"
                      f"{formula}\n\n"
                      f"- 첫 번째 인수 {col_range('E', 2, last)}: 더할 매출액 범위\n"
                      f"- {col_range('A', 2, last)}, \"{month}\": 월 조건\n"
                      f"- {col_range('B', 2, last)}, \"{branch}\": 지점 조건\n"
                      f"- {col_range('C', 2, last)}, \"{product}\": 제품 조건\n\n"
                      f"조건 값을 셀(예: H1에 월, H2에 지점, H3에 제품)에 입력해 두고 \"{month}\" 대신 H1처럼 "
                      f"참조하면 조건만 바꿔 가며 재사용할 수 있습니다. 범위는 모두 같은 행 수여야 합니다.")
        else:
            instr = f"{branch} 지점의 전체 판매수량 합계와, 판매수량이 10개 이상인 거래만의 매출 합계를 각각 구하고 싶어요."
            formula = f'=SUMIFS({col_range("D", 2, last)}, {col_range("B", 2, last)}, "{branch}")'
            formula2 = (f'=SUMIFS({col_range("E", 2, last)}, {col_range("B", 2, last)}, "{branch}", '
                        f'{col_range("D", 2, last)}, ">=10")')
            answer = (f"두 개의 SUMIFS 수식을 사용합니다.\n\n"
                      f"1) {branch} 지점 판매수량 합계\n{formula}\n\n"
                      f"2) {branch} 지점에서 판매수량이 10개 이상인 거래의 매출 합계\n{formula2}\n\n"
                      f"비교 조건(\">=10\")은 따옴표 안에 연산자와 숫자를 함께 씁니다. 기준 수량을 셀 G1에 두었다면 "
                      f"\">=\"&G1 처럼 연결 연산자(&)로 붙이면 됩니다.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_lookup(rng):
    out = []
    for i in range(30):
        last = rng.choice([30, 80, 150, 300])
        name_col, dept_col, pay_col = "B", "C", "E"
        emp_id = f"E{1000 + rng.randrange(1, 900)}"
        kind = i % 3
        layout = (f"'사원명부' 시트: A열 사번, B열 이름, C열 부서, D열 직급, E열 기본급. 데이터 A2:E{last}. "
                  f"'급여계산' 시트의 A2 셀에 사번 {emp_id}가 입력되어 있습니다.")
        if kind == 0:
            instr = "급여계산 시트에서 사번으로 사원명부의 이름을 가져오는 VLOOKUP 수식을 만들어 주세요."
            answer = (f"급여계산 시트 B2에 다음 수식을 입력합니다.\n\n"
                      f"=VLOOKUP(A2, 사원명부!$A$2:$E${last}, 2, FALSE)\n\n"
                      f"- A2: 찾을 사번\n- 사원명부!$A$2:$E${last}: 사번이 첫 열에 오는 표 범위(절대 참조로 고정)\n"
                      f"- 2: 표의 두 번째 열(이름)을 반환\n- FALSE: 정확히 일치하는 값만 찾기\n\n"
                      f"마지막 인수를 생략하거나 TRUE로 두면 근사값을 찾아 엉뚱한 이름이 나올 수 있으니 꼭 FALSE를 쓰세요.")
        elif kind == 1:
            instr = f"같은 작업을 XLOOKUP으로 하고, 사번이 없으면 '미등록'이라고 표시하고 싶어요. 부서({dept_col}열)를 가져와 주세요."
            answer = (f"XLOOKUP은 찾을 열과 반환할 열을 따로 지정하므로 열 번호를 셀 필요가 없습니다.\n\n"
                      f"=XLOOKUP(A2, 사원명부!$A$2:$A${last}, 사원명부!${dept_col}$2:${dept_col}${last}, \"미등록\")\n\n"
                      f"네 번째 인수 \"미등록\"은 사번을 찾지 못했을 때 #N/A 대신 표시할 값입니다. "
                      f"XLOOKUP은 Microsoft 365와 Excel 2021 이상에서 사용할 수 있습니다.")
        else:
            instr = f"사번으로 기본급({pay_col}열)을 찾아서 10% 인상된 금액을 계산하는 수식을 알려주세요."
            answer = (f"기본급을 찾은 뒤 1.1을 곱하면 됩니다.\n\n"
                      f"=VLOOKUP(A2, 사원명부!$A$2:$E${last}, 5, FALSE)*1.1\n\n"
                      f"원 단위로 반올림하려면 =ROUND(VLOOKUP(A2, 사원명부!$A$2:$E${last}, 5, FALSE)*1.1, 0) 처럼 "
                      f"ROUND로 감싸고, 십 원 단위 절사는 ROUNDDOWN(…, -1)을 사용합니다.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_index_match(rng):
    out = []
    for i in range(20):
        rows = rng.choice([8, 10, 12])
        product = PRODUCTS[i % len(PRODUCTS)]
        month = MONTHS[(i * 5) % 12]
        last_row = 1 + rows
        instr = f"제품별·월별 매출표에서 {product}의 {month} 매출을 INDEX와 MATCH로 찾고 싶어요."
        layout = (f"A2:A{last_row}에 제품명, B1:M1에 1월~12월 머리글, B2:M{last_row}에 매출액이 있습니다. "
                  f"P1에 제품명, P2에 월을 입력합니다.")
        answer = (f"행과 열을 각각 MATCH로 찾고 INDEX로 교차하는 값을 가져옵니다.\n\n"
                  f"=INDEX($B$2:$M${last_row}, MATCH(P1, $A$2:$A${last_row}, 0), MATCH(P2, $B$1:$M$1, 0))\n\n"
                  f"P1에 \"{product}\", P2에 \"{month}\"를 입력하면 해당 매출이 나옵니다.\n"
                  f"- 첫 번째 MATCH: 제품이 몇 번째 행인지\n- 두 번째 MATCH: 월이 몇 번째 열인지\n"
                  f"- MATCH의 세 번째 인수 0은 정확히 일치를 뜻합니다.\n"
                  f"VLOOKUP과 달리 찾는 열이 표의 왼쪽에 있지 않아도 되고, 열을 삽입해도 수식이 깨지지 않습니다.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_if(rng):
    out = []
    for i in range(25):
        last = rng.choice([20, 40, 60, 100])
        kind = i % 3
        if kind == 0:
            cut = rng.choice([80, 85, 90])
            instr = f"성과 점수가 {cut}점 이상이면 'A', 70점 이상이면 'B', 그 미만이면 'C' 등급을 매기고 싶어요."
            layout = f"C열에 성과 점수(0~100)가 2행부터 {last}행까지 있고, D열에 등급을 넣으려 합니다."
            answer = (f"D2에 다음 수식을 넣고 D{last}까지 채우기 핸들로 복사하세요.\n\n"
                      f"=IF(C2>={cut}, \"A\", IF(C2>=70, \"B\", \"C\"))\n\n"
                      f"조건은 높은 기준부터 검사해야 합니다. Excel 2019 이상이면 IFS로 더 읽기 쉽게 쓸 수 있습니다.\n"
                      f"=IFS(C2>={cut}, \"A\", C2>=70, \"B\", TRUE, \"C\")")
        elif kind == 1:
            instr = "출근 시각이 9시를 넘으면 '지각', 아니면 '정상'으로 표시하는 수식이 필요해요."
            layout = f"'출결' 시트 B열에 날짜, C열에 출근 시각(예: 8:57, 9:12)이 2행부터 {last}행까지 입력되어 있습니다."
            answer = (f"D2에 다음 수식을 입력합니다.\n\n"
                      f"=IF(C2>TIME(9,0,0), \"지각\", \"정상\")\n\n"
                      f"시각은 Excel 내부에서 하루를 1로 보는 소수이므로 \"9:00\" 같은 텍스트와 비교하지 말고 TIME(9,0,0)과 "
                      f"비교하세요. 출근 기록이 비어 있는 날을 '결근'으로 처리하려면 "
                      f"=IF(C2=\"\", \"결근\", IF(C2>TIME(9,0,0), \"지각\", \"정상\"))을 사용합니다.")
        else:
            item = ITEMS[i % len(ITEMS)]
            instr = f"재고 수량이 안전재고보다 적으면 '발주 필요'라고 표시해 주세요. 예를 들어 {item} 같은 품목이요."
            layout = f"A열 품목, B열 현재 재고, C열 안전재고. 데이터는 2행부터 {last}행까지."
            answer = (f"D2에 입력하고 아래로 복사합니다.\n\n"
                      f"=IF(B2<C2, \"발주 필요\", \"\")\n\n"
                      f"조건을 만족하지 않을 때 빈 문자열(\"\")을 돌려주면 필요한 품목만 눈에 띕니다. 부족 수량까지 보려면 "
                      f"=IF(B2<C2, \"발주 필요(\"&C2-B2&\"개 부족)\", \"\")처럼 & 연산자로 문자열을 연결하세요.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_countifs(rng):
    out = []
    for i in range(20):
        last = rng.choice([30, 90, 250])
        name = NAMES[i % len(NAMES)]
        dept = DEPTS[i % len(DEPTS)]
        if i % 2 == 0:
            instr = f"{name} 사원의 이번 달 지각 횟수를 세고 싶어요."
            layout = f"'출결' 시트: A열 이름, B열 날짜, C열 상태('정상', '지각', '결근', '휴가'). 2행~{last}행."
            answer = (f"COUNTIFS로 이름과 상태 두 조건을 동시에 셉니다.\n\n"
                      f"=COUNTIFS($A$2:$A${last}, \"{name}\", $C$2:$C${last}, \"지각\")\n\n"
                      f"특정 기간만 세려면 날짜 조건을 추가합니다. 예: 2024년 3월만\n"
                      f"=COUNTIFS($A$2:$A${last}, \"{name}\", $C$2:$C${last}, \"지각\", "
                      f"$B$2:$B${last}, \">=\"&DATE(2024,3,1), $B$2:$B${last}, \"<=\"&EOMONTH(DATE(2024,3,1),0))")
        else:
            instr = f"{dept}에서 기본급이 300만 원 이상인 직원 수를 구해 주세요."
            layout = f"A열 이름, B열 부서, C열 기본급(원). 2행~{last}행."
            answer = (f"=COUNTIFS($B$2:$B${last}, \"{dept}\", $C$2:$C${last}, \">=3000000\")\n\n"
                      f"숫자 조건은 \">=3000000\"처럼 따옴표 안에 씁니다. 부서별로 한꺼번에 보려면 E열에 부서 목록을 적고 "
                      f"F2에 =COUNTIFS($B$2:$B${last}, E2, $C$2:$C${last}, \">=3000000\")을 입력해 아래로 복사하세요.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_text_dates(rng):
    out = []
    for i in range(25):
        kind = i % 5
        last = rng.choice([25, 50, 120])
        if kind == 0:
            instr = "날짜를 '2024년 03월 05일 (화)' 형식의 문자열로 바꾸고 싶어요."
            layout = f"A2:A{last}에 날짜가 있습니다."
            answer = ("TEXT 함수의 서식 코드를 사용합니다.\n\n=TEXT(A2, \"yyyy년 mm월 dd일 (aaa)\")\n\n"
                      "aaa는 요일을 한 글자(월, 화, …)로, aaaa는 '화요일'처럼 전체로 표시합니다. 결과는 텍스트이므로 "
                      "날짜 계산이 필요하면 원본 A열을 사용하세요.")
        elif kind == 1:
            instr = "입사일로부터 오늘까지의 근속 연수와 개월 수를 '5년 3개월'처럼 표시해 주세요."
            layout = f"C열에 입사일이 2행부터 {last}행까지 있습니다."
            answer = ("DATEDIF 함수로 연과 개월을 따로 구해 연결합니다.\n\n"
                      "=DATEDIF(C2, TODAY(), \"Y\")&\"년 \"&DATEDIF(C2, TODAY(), \"YM\")&\"개월\"\n\n"
                      "\"Y\"는 만 연수, \"YM\"은 연을 뺀 나머지 개월 수입니다. DATEDIF는 함수 목록에 보이지 않지만 "
                      "입력하면 동작하며, 시작일이 종료일보다 늦으면 #NUM! 오류가 납니다.")
        elif kind == 2:
            instr = "각 거래일이 속한 달의 마지막 날(월말)을 구하고, 월말까지 남은 영업일 수도 알고 싶어요."
            layout = f"B열에 거래일, '휴일' 시트 A2:A20에 공휴일 목록이 있습니다."
            answer = ("월말은 EOMONTH, 영업일 수는 NETWORKDAYS로 구합니다.\n\n"
                      "월말: =EOMONTH(B2, 0)\n"
                      "남은 영업일: =NETWORKDAYS(B2, EOMONTH(B2, 0), 휴일!$A$2:$A$20)\n\n"
                      "EOMONTH의 두 번째 인수 0은 같은 달, 1은 다음 달 말일입니다. 결과가 숫자로 보이면 셀 서식을 "
                      "날짜로 바꾸세요. NETWORKDAYS는 시작일과 종료일을 모두 포함해 셉니다.")
        elif kind == 3:
            amount_col = rng.choice(["D", "E", "F"])
            instr = f"{amount_col}열의 금액을 '1,234,500원' 형식의 텍스트로 보고서 문장에 넣고 싶어요."
            layout = f"{amount_col}2:{amount_col}{last}에 금액(숫자)이 있습니다."
            answer = (f"TEXT로 천 단위 구분 기호를 넣고 문자열을 연결합니다.\n\n"
                      f"=\"이번 달 매출은 \"&TEXT({amount_col}2, \"#,##0\")&\"원입니다.\"\n\n"
                      f"백만 원 단위로 줄이려면 TEXT({amount_col}2/1000000, \"#,##0.0\")&\"백만 원\"처럼 나눈 뒤 서식을 "
                      f"지정하세요. 숫자 자체의 셀 서식은 바뀌지 않습니다.")
        else:
            instr = "날짜 열에서 요일을 구해 주말이면 '주말', 평일이면 '평일'로 표시하고 싶어요."
            layout = f"A2:A{last}에 날짜가 있습니다."
            answer = ("WEEKDAY의 반환 유형 2를 쓰면 월요일이 1, 일요일이 7이 됩니다.\n\n"
                      "=IF(WEEKDAY(A2, 2)>5, \"주말\", \"평일\")\n\n"
                      "6(토)과 7(일)이 5보다 크므로 주말로 분류됩니다. 요일 이름만 필요하면 =TEXT(A2, \"aaaa\")를 사용하세요.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_pivot(rng):
    out = []
    sheets = ["매출", "판매내역", "거래내역", "영업실적"]
    rows_fields = ["지점", "제품", "담당자"]
    cols_fields = ["월", "분기", "제품", "지점"]
    values = [("매출액", "합계"), ("수량", "합계"), ("매출액", "평균"), ("거래번호", "개수")]
    for i in range(30):
        sheet = sheets[i % len(sheets)]
        last = rng.choice([500, 800, 1200, 3000, 5000])
        row_f = rows_fields[i % len(rows_fields)]
        col_f = [c for c in cols_fields if c != row_f][i % 3]
        value_f, agg = values[i % len(values)]
        instr = f"{row_f}별·{col_f}별 {value_f} {agg}를 한눈에 보는 피벗 테이블을 만들어 주세요."
        layout = (f"'{sheet}' 시트 A1:G{last}: 거래번호, 날짜, 지점, 제품, 담당자, 수량, 매출액 (첫 행은 머리글). "
                  f"날짜 열로 월과 분기를 구분합니다.")
        grouping = ""
        if col_f in ("월", "분기"):
            grouping = (f" 날짜를 열 영역에 놓은 뒤 날짜 셀을 우클릭해 [그룹]에서 '{col_f}'만 선택하면 "
                        f"{col_f}별로 묶입니다(여러 해 데이터라면 '연'도 함께 선택).")
        answer = (f"1. {sheet} 시트의 데이터 안 아무 셀이나 선택하고 [삽입] → [피벗 테이블]을 누릅니다.\n"
                  f"2. 범위가 {sheet}!$A$1:$G${last}인지 확인하고 '새 워크시트'를 선택합니다.\n"
                  f"3. '{row_f}'를 행 영역에 놓습니다.\n"
                  f"4. '{'날짜' if col_f in ('월', '분기') else col_f}'를 열 영역에 놓습니다.{grouping}\n"
                  f"5. '{value_f}'를 값 영역에 놓고 [값 필드 설정]에서 요약 방식을 '{agg}'로 지정합니다.\n"
                  f"6. [값 필드 설정] → [표시 형식]에서 천 단위 구분 기호를 켜면 읽기 쉽습니다.\n\n"
                  f"원본에 행이 계속 추가된다면 먼저 Ctrl+T로 표(Table)로 바꾼 뒤 피벗을 만드세요. 그러면 "
                  f"[모두 새로 고침]만으로 범위가 자동으로 확장됩니다.")
        out.append(dict(task_type="PIVOT", instruction=instr, input=layout, output=answer))
    return out


def records_chart(rng):
    out = []
    for i in range(24):
        kind = i % 3
        n = rng.choice([6, 8, 12])
        last = n + 1
        color = rng.choice(["빨강", "주황", "검정", "진한 회색"])
        if kind == 0:
            title = rng.choice(["월별 매출 추이", "월별 판매량 추이", "월별 인건비 추이"])
            instr = f"'{title}'를 꺾은선형 차트로 그리고 목표선도 {color} 점선으로 표시하고 싶어요."
            layout = f"A2:A{last}에 월, B2:B{last}에 실적, C2:C{last}에 목표(모두 같은 값)."
            answer = (f"1. A1:C{last}를 선택하고 [삽입] → [꺾은선형 차트]를 고릅니다.\n"
                      f"2. 목표 계열(C열)을 클릭해 [데이터 계열 서식]에서 선 종류를 점선, 색을 {color}으로 바꿉니다.\n"
                      f"3. [차트 요소](+)에서 차트 제목, 축 제목, 범례를 켜고 제목을 '{title}'로 입력합니다.\n"
                      f"4. 세로 축을 더블클릭해 표시 단위를 '백만'으로 지정하면 큰 값도 읽기 쉽습니다.")
        elif kind == 1:
            what = rng.choice(["지점별 연간 매출", "제품별 판매 비중", "부서별 인원"])
            instr = f"{what} 비중을 보여 주는 차트를 추천하고 만드는 방법을 알려주세요. 항목은 {n}개예요."
            layout = f"A2:A{last}에 항목명, B2:B{last}에 값."
            if n <= 6:
                body = (f"항목이 {n}개로 적고 전체 대비 비중을 보여 주려면 원형(또는 도넛형) 차트가 적합합니다.\n"
                        f"1. A1:B{last}를 선택하고 [삽입] → [원형 차트]를 선택합니다.\n"
                        f"2. [차트 요소] → [데이터 레이블] → [기타 옵션]에서 '백분율'과 '항목 이름'을 켭니다.\n"
                        f"3. 가장 큰 조각만 클릭해 바깥으로 살짝 끌어내 강조합니다.")
            else:
                body = (f"항목이 {n}개로 많으면 원형 차트는 조각이 작아 읽기 어렵습니다. 값 기준 내림차순으로 정렬한 "
                        f"가로 막대형 차트를 권합니다.\n"
                        f"1. B열 기준으로 내림차순 정렬한 뒤 A1:B{last}를 선택하고 [삽입] → [가로 막대형]을 고릅니다.\n"
                        f"2. 세로 축 서식에서 '항목을 거꾸로'를 체크해 가장 큰 값이 위로 오게 합니다.\n"
                        f"3. 데이터 레이블을 켜고, 비중이 필요하면 C열에 =B2/SUM($B$2:$B${last}) 을 백분율 서식으로 두어 레이블로 씁니다.")
            answer = body
        else:
            instr = f"제품 {n}개의 판매수량(막대)과 매출액(꺾은선)을 한 차트에 보조 축으로 그리고 싶어요."
            layout = f"A2:A{last} 제품명, B2:B{last} 판매수량, C2:C{last} 매출액."
            answer = (f"콤보 차트를 사용합니다.\n"
                      f"1. A1:C{last}를 선택하고 [삽입] → [콤보 차트] → [사용자 지정 콤보 차트 만들기]를 누릅니다.\n"
                      f"2. 판매수량은 '묶은 세로 막대형', 매출액은 '꺾은선형'으로 지정하고 매출액의 '보조 축'에 체크합니다.\n"
                      f"3. 왼쪽 축 제목은 '수량(개)', 오른쪽 축 제목은 '매출액(원)'으로 입력합니다.\n"
                      f"단위와 크기가 다른 두 값이 각자의 축에 맞춰 표시되어 비교가 쉬워집니다.")
        out.append(dict(task_type="CHART", instruction=instr, input=layout, output=answer))
    return out


def records_conditional_format(rng):
    out = []
    fills = ["연한 빨강", "노랑", "연한 주황", "연한 파랑"]
    for i in range(27):
        last = rng.choice([30, 60, 120, 200])
        fill = fills[i % len(fills)]
        kind = i % 3
        if kind == 0:
            instr = f"재고가 안전재고보다 적은 행 전체를 {fill}색으로 칠하고 싶어요."
            layout = f"A2:E{last}: 품목, 분류, 현재 재고(C열), 안전재고(D열), 단가."
            answer = (f"1. A2:E{last}를 선택합니다.\n"
                      "2. [홈] → [조건부 서식] → [새 규칙] → '수식을 사용하여 서식을 지정할 셀 결정'을 선택합니다.\n"
                      "3. 수식에 =$C2<$D2 를 입력합니다.\n"
                      f"4. [서식]에서 채우기 색을 {fill}으로 지정하고 확인을 누릅니다.\n\n"
                      "열 앞에만 $를 붙여야(=$C2) 행 전체가 같은 행의 재고를 기준으로 칠해집니다.")
        elif kind == 1:
            pct = rng.choice([5, 10, 20])
            instr = f"매출 상위 {pct}% 값은 {fill}색으로 강조하고, 평균 미만은 회색 글꼴로 표시하고 싶어요."
            layout = f"D2:D{last}에 매출액."
            answer = (f"1. D2:D{last}를 선택하고 [조건부 서식] → [상위/하위 규칙] → [상위 10%]를 누른 뒤, 값을 {pct}로 바꾸고 "
                      f"서식을 '사용자 지정 서식'에서 채우기 {fill}으로 지정합니다.\n"
                      "2. 같은 범위에서 [상위/하위 규칙] → [평균 미만]을 선택하고 [사용자 지정 서식]에서 글꼴 색을 회색으로 "
                      "지정합니다.\n"
                      "[조건부 서식] → [규칙 관리]에서 두 규칙의 순서와 적용 범위를 확인할 수 있습니다.")
        else:
            days = rng.choice([3, 7, 14])
            instr = f"마감일이 오늘로부터 {days}일 이내로 남은 미완료 업무를 {fill}색으로 표시해 주세요."
            layout = f"A열 업무, B열 담당자, C2:C{last}에 마감일, D열에 완료 여부('완료' 또는 빈칸)."
            answer = (f"1. A2:D{last}를 선택하고 [조건부 서식] → [새 규칙] → '수식을 사용하여…'를 고릅니다.\n"
                      f"2. 수식: =AND($D2<>\"완료\", $C2>=TODAY(), $C2-TODAY()<={days})\n"
                      f"3. 채우기 색을 {fill}으로 지정합니다.\n\n"
                      "TODAY()를 쓰므로 파일을 여는 날짜에 맞춰 자동으로 갱신됩니다. 이미 지난 마감일은 "
                      "=AND($D2<>\"완료\", $C2<TODAY()) 규칙을 하나 더 만들어 빨강으로 표시하면 좋습니다.")
        out.append(dict(task_type="FORMAT", instruction=instr, input=layout, output=answer))
    return out


def records_validation(rng):
    out = []
    lists = [("부서", DEPTS), ("지점", BRANCHES[:6]), ("제품", PRODUCTS[:6]), ("결제수단", ["카드", "현금", "계좌이체", "상품권"])]
    for i in range(24):
        last = rng.choice([50, 100, 300, 1000])
        if i % 2 == 0:
            label, values = lists[(i // 2) % len(lists)]
            col = rng.choice(["C", "D", "E"])
            end = 1 + len(values)
            instr = f"{label} 열에 정해진 값만 고를 수 있도록 드롭다운 목록을 만들어 주세요."
            layout = (f"'목록' 시트 A2:A{end}에 {label} 목록({', '.join(values)}), "
                      f"입력 시트 {col}2:{col}{last}에 {label}을 입력합니다.")
            answer = (f"1. 입력 시트에서 {col}2:{col}{last}를 선택합니다.\n"
                      "2. [데이터] → [데이터 유효성 검사]를 누르고 '제한 대상'을 '목록'으로 바꿉니다.\n"
                      f"3. 원본에 =목록!$A$2:$A${end} 를 입력합니다.\n"
                      f"4. [오류 메시지] 탭에서 스타일 '중지', 메시지 '목록에 있는 {label}만 입력할 수 있습니다.'를 입력합니다.\n\n"
                      f"{label} 목록이 늘어날 수 있다면 목록을 표(Ctrl+T)로 만들고 이름을 '{label}목록'으로 정의한 뒤 원본에 "
                      f"={label}목록 을 쓰면 자동으로 확장됩니다.")
        else:
            lo, hi = rng.choice([(1, 999), (0, 100), (1, 50), (10, 5000)])
            col = rng.choice(["D", "F", "G"])
            instr = f"수량 칸에는 {lo} 이상 {hi} 이하의 정수만 입력되게 막고 싶어요."
            layout = f"{col}2:{col}{last}가 수량 입력 칸입니다."
            answer = (f"1. {col}2:{col}{last}를 선택하고 [데이터] → [데이터 유효성 검사]를 엽니다.\n"
                      f"2. 제한 대상 '정수', 제한 방법 '해당 범위', 최소값 {lo}, 최대값 {hi}를 입력합니다.\n"
                      f"3. [설명 메시지] 탭에 '{lo}~{hi} 사이의 정수를 입력하세요.'를 넣으면 셀을 선택할 때 안내가 뜹니다.\n\n"
                      "이미 입력된 잘못된 값은 [데이터 유효성 검사] → [잘못된 데이터] 표시로 동그라미를 쳐서 찾을 수 있습니다.")
        out.append(dict(task_type="VALIDATION", instruction=instr, input=layout, output=answer))
    return out


def records_errors(rng):
    out = []
    for i in range(40):
        code = ["#N/A", "#REF!", "#VALUE!", "#DIV/0!", "#NAME?"][i % 5]
        place = rng.choice(["급여 시트", "재고 시트", "매출 보고서", "출결 집계표", "월말 정산표"])
        row = rng.choice([2, 3, 5, 7, 10])
        last = rng.choice([100, 200, 500])
        if code == "#N/A":
            formula = f"=VLOOKUP(A{row}, 단가표!$A$2:$C${last}, 3, FALSE)"
            fix = (f"A{row}의 값이 단가표 A열에 없을 때 #N/A가 납니다. 품목명 앞뒤 공백, 숫자와 텍스트 형식 차이(숫자 1001과 "
                   f"텍스트 '1001')가 흔한 원인입니다.\n\n"
                   f"1. =TRIM(A{row})로 공백을 지운 값과 비교해 보세요.\n"
                   f"2. 형식이 다르면 =VLOOKUP(A{row}&\"\", 단가표!$A$2:$C${last}, 3, FALSE)(텍스트로 맞춤) 또는 "
                   f"=VLOOKUP(A{row}*1, …)(숫자로 맞춤)을 씁니다.\n"
                   f"3. 정말 없는 품목이면 =IFERROR(VLOOKUP(A{row}, 단가표!$A$2:$C${last}, 3, FALSE), \"단가 없음\")으로 "
                   f"안내 문구를 표시합니다.\n\nIFERROR로 감추기 전에 원인부터 확인해야 잘못된 데이터가 묻히지 않습니다.")
        elif code == "#REF!":
            formula = f"=SUM(B{row}:D{row})/#REF!"
            fix = (f"나누던 셀(또는 그 셀이 있던 열)이 삭제되어 수식에 #REF!가 남았습니다. 되돌리기(Ctrl+Z)가 가능하면 삭제를 "
                   f"취소하는 것이 가장 빠릅니다. 아니라면 #REF! 부분을 올바른 셀로 다시 지정하세요. 예를 들어 인원 수가 "
                   f"E{row}에 있다면 =SUM(B{row}:D{row})/E{row} 입니다.\n\n"
                   "열을 자주 삭제하는 표라면 표(Table)의 구조적 참조나 INDEX/MATCH를 쓰면 참조가 덜 깨집니다.")
        elif code == "#VALUE!":
            formula = f"=B{row}+C{row}"
            fix = (f"B{row}나 C{row}에 숫자가 아닌 텍스트(예: '12,000원', 공백 문자)가 있으면 #VALUE!가 납니다.\n\n"
                   f"1. =ISNUMBER(B{row}), =ISNUMBER(C{row})로 어느 셀이 텍스트인지 확인합니다.\n"
                   "2. '원' 같은 단위는 값에서 빼고 셀 서식(#,##0\"원\")으로 표시하세요.\n"
                   f"3. 이미 입력된 텍스트 숫자는 =VALUE(SUBSTITUTE(B{row}, \"원\", \"\"))로 바꾸거나 [데이터] → "
                   "[텍스트 나누기]로 한 번에 숫자로 변환합니다.\n\n"
                   f"=SUM(B{row}:C{row})은 텍스트를 건너뛰어 오류는 없지만 값이 빠진 채 합계가 나올 수 있으니 주의하세요.")
        elif code == "#DIV/0!":
            formula = f"=D{row}/C{row}"
            fix = (f"분모 C{row}가 0이거나 비어 있어 나눌 수 없을 때 #DIV/0!이 납니다. 판매가 없는 달의 평균 단가 계산에서 "
                   f"흔합니다.\n\n=IF(C{row}=0, \"\", D{row}/C{row})\n\n"
                   f"=IFERROR(D{row}/C{row}, 0)도 되지만, 0으로 표시하면 평균 계산에 포함되어 결과가 왜곡될 수 있으니 "
                   "빈칸(\"\")을 권장합니다.")
        else:
            formula = f"=SUMIF(지점, \"서울\", 매출액)"
            fix = ("#NAME?은 Excel이 수식 안의 이름을 알아보지 못할 때 납니다. 여기서는 '지점'과 '매출액'이라는 이름 정의가 "
                   "없기 때문입니다.\n\n1. [수식] → [이름 관리자]에서 두 이름이 정의되어 있는지 확인합니다.\n"
                   f"2. 없다면 범위를 직접 쓰세요: =SUMIF(B2:B{last}, \"서울\", E2:E{last})\n\n"
                   "함수 이름 오타(SUMFI), 따옴표 없는 텍스트 조건, 상위 버전 전용 함수(예: Excel 2016에서 XLOOKUP)도 같은 "
                   "오류를 냅니다.")
        cell = f"F{row}"
        instr = f"{place}의 {cell} 셀에 {code} 오류가 나요. 어떻게 고치나요?"
        out.append(dict(task_type="CORRECT", instruction=instr, input=f"{cell} 수식: {formula}", output=fix))
    return out


def records_text_functions(rng):
    out = []
    for i in range(24):
        kind = i % 4
        last = rng.choice([40, 120, 400])
        if kind == 0:
            instr = "제품코드 'NB-2024-0153'에서 분류(NB), 연도(2024), 일련번호(0153)를 각각 다른 열로 나누고 싶어요."
            layout = f"A2:A{last}에 '분류-연도-번호' 형식의 제품코드가 있습니다. 분류는 2글자, 연도 4자리, 번호 4자리입니다."
            answer = ("길이가 고정되어 있으므로 LEFT, MID, RIGHT로 자릅니다.\n\n"
                      "- 분류: =LEFT(A2, 2)\n- 연도: =MID(A2, 4, 4)\n- 번호: =RIGHT(A2, 4)\n\n"
                      "연도를 숫자로 쓰려면 =VALUE(MID(A2, 4, 4))처럼 VALUE로 감쌉니다. 길이가 일정하지 않다면 [데이터] → "
                      "[텍스트 나누기]에서 구분 기호 '-'를 지정하거나, Microsoft 365의 =TEXTSPLIT(A2, \"-\")를 사용하세요.")
        elif kind == 1:
            dept = DEPTS[i % len(DEPTS)]
            instr = f"{dept} 직원 이름을 쉼표로 이어서 한 셀에 모아 보여 주고 싶어요."
            layout = f"A2:A{last} 이름, B2:B{last} 부서."
            answer = (f"Excel 2019 이상에서는 TEXTJOIN과 IF를 함께 씁니다.\n\n"
                      f"=TEXTJOIN(\", \", TRUE, IF($B$2:$B${last}=\"{dept}\", $A$2:$A${last}, \"\"))\n\n"
                      f"두 번째 인수 TRUE는 빈 값을 건너뛰라는 뜻입니다. Microsoft 365라면 "
                      f"=TEXTJOIN(\", \", TRUE, FILTER($A$2:$A${last}, $B$2:$B${last}=\"{dept}\"))도 가능합니다. "
                      "Excel 2019 이전 버전은 Ctrl+Shift+Enter로 배열 수식으로 입력해야 합니다.")
        elif kind == 2:
            instr = "전화번호가 '01012345678'처럼 붙어 있는데 '010-1234-5678' 형식으로 바꾸고 싶어요."
            layout = f"C2:C{last}에 하이픈 없는 11자리 휴대전화 번호가 텍스트로 입력되어 있습니다."
            answer = ("문자열을 잘라 하이픈을 넣어 연결합니다.\n\n"
                      "=LEFT(C2, 3)&\"-\"&MID(C2, 4, 4)&\"-\"&RIGHT(C2, 4)\n\n"
                      "번호가 숫자로 저장되어 맨 앞 0이 사라졌다면(1012345678) =TEXT(C2, \"000-0000-0000\")으로 "
                      "0을 살리면서 서식을 입힐 수 있습니다.")
        else:
            instr = "거래처명 앞뒤에 불필요한 공백과 줄바꿈이 섞여 있어서 VLOOKUP이 안 돼요. 한 번에 정리하는 방법이 있나요?"
            layout = f"B2:B{last}에 거래처명."
            answer = ("TRIM은 앞뒤 공백과 중간의 연속 공백을, CLEAN은 줄바꿈 같은 인쇄되지 않는 문자를 지웁니다.\n\n"
                      "=TRIM(CLEAN(B2))\n\n"
                      "웹에서 복사한 데이터의 줄 바꿈 없는 공백(CHAR(160))은 TRIM이 지우지 못하므로 "
                      "=TRIM(CLEAN(SUBSTITUTE(B2, CHAR(160), \" \")))를 사용하세요. 정리한 열을 복사한 뒤 [값으로 붙여넣기]로 "
                      "원본을 바꾸면 VLOOKUP이 정상 동작합니다.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_rank_growth(rng):
    out = []
    for i in range(24):
        kind = i % 3
        last = rng.choice([10, 25, 60])
        if kind == 0:
            instr = "영업사원별 실적 순위를 구하고, 동점이면 같은 순위로 표시하고 싶어요."
            layout = f"A2:A{last + 1} 이름, C2:C{last + 1} 실적."
            answer = (f"=RANK.EQ(C2, $C$2:$C${last + 1}, 0)\n\n"
                      "세 번째 인수 0은 내림차순(큰 값이 1위)입니다. 동점자는 같은 순위가 되고 다음 순위는 건너뜁니다(1, 2, 2, 4). "
                      f"상위 3명의 실적은 =LARGE($C$2:$C${last + 1}, 1), …, LARGE(…, 3)으로 구할 수 있습니다.")
        elif kind == 1:
            instr = "올해와 작년 월별 매출로 전년 대비 증감률(%)을 구하고 감소한 달은 빨간색으로 보이게 하고 싶어요."
            layout = "A2:A13 월, B2:B13 작년 매출, C2:C13 올해 매출."
            answer = ("D2에 증감률을 구하고 아래로 복사합니다.\n\n=IF(B2=0, \"\", (C2-B2)/B2)\n\n"
                      "D열 셀 서식을 [사용자 지정] 0.0%;[빨강]-0.0% 로 지정하면 감소한 달은 빨간색 음수로 표시됩니다. "
                      "작년 매출이 0인 달은 증감률을 정의할 수 없으므로 빈칸으로 둡니다.")
        else:
            n = rng.choice([3, 5, 10])
            instr = f"매출 상위 {n}개 제품 목록을 자동으로 뽑아 정렬해서 보여 주고 싶어요."
            layout = f"A2:A{last + 1} 제품명, B2:B{last + 1} 매출액 (Microsoft 365 사용)."
            answer = (f"동적 배열 함수를 조합합니다.\n\n"
                      f"=TAKE(SORT(A2:B{last + 1}, 2, -1), {n})\n\n"
                      f"SORT의 두 번째 인수 2는 두 번째 열(매출액) 기준, -1은 내림차순입니다. TAKE가 위에서 {n}행만 남깁니다. "
                      f"TAKE가 없는 버전에서는 =INDEX(SORT(A2:B{last + 1}, 2, -1), SEQUENCE({n}), {{1,2}})를 사용하세요.")
        out.append(dict(task_type="FORMULA", instruction=instr, input=layout, output=answer))
    return out


def records_explain(rng):
    out = []
    askers = ["이 수식이 무슨 뜻인지 설명해 주세요.", "팀장님이 만든 수식인데 어떻게 동작하는지 모르겠어요.",
              "이 수식을 단계별로 풀어서 설명해 줄 수 있나요?", "수식을 해석해 주세요.",
              "신입 사원에게 설명하려고 하는데 쉽게 풀어 주세요."]
    for i in range(40):
        n = rng.choice([50, 100, 200, 500, 1000])
        branch = BRANCHES[i % len(BRANCHES)]
        dept = DEPTS[i % len(DEPTS)]
        kind = i % 8
        if kind == 0:
            formula = f"=SUMPRODUCT((B2:B{n}=\"{branch}\")*(D2:D{n}))"
            expl = (f"B열이 '{branch}'인 행의 D열 값을 모두 더합니다. (B2:B{n}=\"{branch}\")은 TRUE/FALSE 배열이고, 곱셈에서 "
                    f"TRUE는 1, FALSE는 0으로 바뀝니다. 그래서 {branch}인 행의 D값만 남고 SUMPRODUCT가 이를 더합니다. "
                    f"결과는 =SUMIF(B2:B{n}, \"{branch}\", D2:D{n})과 같습니다.")
        elif kind == 1:
            formula = f"=IFERROR(INDEX(C2:C{n}, MATCH(F2, A2:A{n}, 0)), \"없음\")"
            expl = (f"F2 값을 A2:A{n}에서 정확히 찾아(MATCH의 0) 몇 번째인지 구하고, INDEX가 C2:C{n}의 같은 위치 값을 "
                    "돌려줍니다. 찾지 못해 오류가 나면 IFERROR가 '없음'을 표시합니다. VLOOKUP과 달리 A열이 C열의 왼쪽에 "
                    "있지 않아도 동작합니다.")
        elif kind == 2:
            rate = rng.choice(["0.033", "0.088"])
            pct = "3.3%" if rate == "0.033" else "8.8%"
            formula = f"=ROUNDDOWN(E{i % 9 + 2}*{rate}, -1)"
            expl = (f"E{i % 9 + 2}(지급액)에 {pct}를 곱해 원천징수 세액을 구한 뒤, ROUNDDOWN의 자릿수 -1로 십 원 미만을 "
                    "버립니다. 자릿수 0은 원 단위, -2는 백 원 단위 절사입니다.")
        elif kind == 3:
            year = rng.choice([2023, 2024, 2025])
            formula = f"=COUNTIFS(C2:C{n}, \"지각\", B2:B{n}, \">=\"&DATE({year},1,1))"
            expl = (f"C열이 '지각'이고 B열 날짜가 {year}년 1월 1일 이후인 행의 개수를 셉니다. 날짜 조건은 비교 연산자 "
                    f"문자열 \">=\"과 DATE 함수 결과를 &로 연결해 만듭니다.")
        elif kind == 4:
            formula = "=TEXT(A2, \"yyyy-mm\")&\" \"&B2"
            expl = (f"A2의 날짜를 '2024-03' 형식의 텍스트로 바꾸고, 공백과 B2 값을 이어 붙입니다. B2가 '{branch}'라면 "
                    f"'2024-03 {branch}' 같은 키가 되어, 월·지점별 SUMIFS 조건으로 자주 씁니다.")
        elif kind == 5:
            top = rng.choice([10, 20, 50])
            formula = f"=VLOOKUP(A2, $H$2:$J${top + 1}, 3, TRUE)"
            expl = (f"A2 값을 H2:H{top + 1}에서 근사 일치로 찾습니다. TRUE는 A2보다 작거나 같은 값 중 가장 큰 값을 찾으므로 "
                    "H열이 오름차순으로 정렬되어 있어야 합니다. 매출 구간별 수수료율 표처럼 구간 찾기에 쓰이며, 정확한 코드 "
                    "찾기에는 FALSE를 써야 합니다.")
        elif kind == 6:
            months = rng.choice([3, 6])
            formula = f"=EDATE(C2, {months})-1"
            expl = (f"C2 날짜로부터 {months}개월 뒤의 같은 날짜를 구한 뒤 하루를 뺍니다. 입사일이 C2라면 {months}개월 수습 "
                    "기간의 마지막 날이 됩니다. 결과가 숫자로 보이면 셀 서식을 날짜로 바꾸세요.")
        else:
            formula = f"=AVERAGEIFS(E2:E{n}, B2:B{n}, \"{dept}\", E2:E{n}, \">0\")"
            expl = (f"B열이 '{dept}'이고 E열이 0보다 큰 행의 E값 평균을 구합니다. 0을 제외하므로 휴직자처럼 급여가 0인 "
                    "행이 평균을 낮추지 않습니다. 빈 셀은 AVERAGEIFS가 원래 건너뜁니다.")
        out.append(dict(task_type="EXPLAIN", instruction=askers[i % len(askers)], input=formula, output=expl))
    return out


def records_create(rng):
    out = []
    for i in range(30):
        kind = i % 3
        n = rng.choice([10, 20, 30, 50])
        if kind == 0:
            instr = f"직원 {n}명의 월 급여 대장을 만들려고 해요. 어떤 열을 두고 어떤 수식을 넣어야 할까요?"
            answer = ("열 구성(1행 머리글):\nA 사번 | B 이름 | C 부서 | D 기본급 | E 수당 | F 지급 합계 | G 국민연금 | H 건강보험 | "
                      "I 소득세 | J 공제 합계 | K 실수령액\n\n수식(2행 기준, 아래로 복사):\n"
                      "- F2: =D2+E2\n- G2: =ROUNDDOWN(D2*4.5%, -1)\n- H2: =ROUNDDOWN(D2*3.545%, -1)\n"
                      "- I2: 간이세액표에서 찾아 입력(또는 별도 시트 VLOOKUP)\n- J2: =SUM(G2:I2)\n- K2: =F2-J2\n\n"
                      f"마지막 행 아래({n + 2}행)에 =SUM(D2:D{n + 1})처럼 합계를 두고, 금액 열에는 #,##0 서식을 지정하세요. "
                      "요율은 해마다 바뀌므로 별도 '요율' 셀에 두고 절대 참조로 쓰면 관리가 쉽습니다.")
        elif kind == 1:
            item = ITEMS[i % len(ITEMS)]
            instr = f"{item} 같은 소모품의 입고·출고를 기록하고 현재 재고가 자동 계산되는 재고 관리표를 만들어 주세요."
            answer = ("시트 두 개로 구성합니다.\n\n1) '입출고' 시트: A 날짜 | B 품목 | C 구분(입고/출고) | D 수량\n"
                      "C열에는 데이터 유효성 검사 목록(입고,출고)을 걸어 입력 실수를 막습니다.\n\n"
                      "2) '재고현황' 시트: A 품목 | B 입고 합계 | C 출고 합계 | D 현재 재고 | E 안전재고 | F 상태\n"
                      "- B2: =SUMIFS(입출고!D:D, 입출고!B:B, A2, 입출고!C:C, \"입고\")\n"
                      "- C2: =SUMIFS(입출고!D:D, 입출고!B:B, A2, 입출고!C:C, \"출고\")\n"
                      "- D2: =B2-C2\n- F2: =IF(D2<E2, \"발주 필요\", \"충분\")\n\n"
                      "F열에 조건부 서식으로 '발주 필요'를 빨간색으로 표시하면 한눈에 보입니다.")
        else:
            month = MONTHS[i % 12]
            instr = f"{month} 출결 현황표 양식을 만들어 주세요. 직원은 {n}명이고 날짜별로 기록하려고 해요."
            answer = (f"가로로 날짜, 세로로 직원을 두는 형태가 편합니다.\n\n"
                      f"- A열: 이름(A3:A{n + 2}), 2행: 1일~31일(B2:AF2)\n"
                      "- 각 칸에는 데이터 유효성 검사 목록(출근,지각,결근,휴가)을 적용합니다.\n"
                      f"- AG열 지각 횟수: =COUNTIF(B3:AF3, \"지각\")\n"
                      f"- AH열 결근 횟수: =COUNTIF(B3:AF3, \"결근\")\n"
                      f"- AI열 출근율: =COUNTIF(B3:AF3, \"출근\")/COUNTA(B3:AF3) (셀 서식 백분율)\n\n"
                      "주말 열은 조건부 서식 =WEEKDAY(DATE(2024, 월, B$2), 2)>5 로 회색 처리하면 입력 실수가 줄어듭니다.")
        out.append(dict(task_type="CREATE", instruction=instr, input="", output=answer))
    return out


GENERATORS = [records_sumifs, records_lookup, records_index_match, records_if, records_countifs,
              records_text_dates, records_pivot, records_chart, records_conditional_format,
              records_validation, records_errors, records_text_functions, records_rank_growth,
              records_explain, records_create]


def main():
    rng = random.Random(20241122)
    records = []
    for gen in GENERATORS:
        records.extend(gen(rng))
    # Drop exact repeats (some scenarios repeat across variations); the
    # product exports each conversation once.
    seen, unique = set(), []
    for r in records:
        key = (r["instruction"], r["input"], r["output"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    rng.shuffle(unique)
    for i, r in enumerate(unique):
        r["id"] = f"xl-{i + 1:04d}"
        r["quality_score"] = round(rng.uniform(0.55, 1.0), 2)
        r["rating"] = rng.choice([3, 4, 4, 5, 5, 5])
        r["edited"] = rng.random() < 0.15
    # Held-out records: only those whose answer appears nowhere else, so the
    # evaluation never scores an answer the model was trained on.
    answers = [r["output"] for r in unique]
    n_eval = max(30, len(unique) // 10)
    evals = [r for r in unique if answers.count(r["output"]) == 1][:n_eval]
    held = {r["id"] for r in evals}
    train = [r for r in unique if r["id"] not in held]
    os.makedirs(OUT, exist_ok=True)
    order = ["id", "task_type", "instruction", "input", "output", "quality_score", "rating", "edited"]
    for name, rows in (("train.jsonl", train), ("eval.jsonl", evals)):
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: r[k] for k in order}, ensure_ascii=False) + "\n")
    print(f"{len(train)} train, {len(evals)} eval records in {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
