import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsflow.schemas import Explanation
from newsflow.text import clean_text, derive_title
from processors.clustering import (
    Article,
    ClusterConfig,
    IncidentClusterer,
    _compact,
    _Facts,
    _Incident,
    _likeliest_home,
    _pace_hours,
    _referenced_days,
)
from processors.features import dates
from tests.unit.processors.test_language import BUS_CRASH, POWER_PRICE

T0 = datetime(2015, 10, 8, 9, tzinfo=UTC)
SEEDS = Path(__file__).resolve().parents[3] / "seeds"

FIRE_1 = (
    "Warehouse fire in Springfield injures two workers",
    "SPRINGFIELD — A fire tore through the Acme Logistics warehouse on Elm Street early "
    "Tuesday, injuring two workers, fire chief Maria Lopez said. About 40 firefighters "
    "fought the blaze for three hours before bringing it under control. The two injured "
    "workers were taken to Mercy Hospital with burns. Lopez said the cause of the fire was "
    "under investigation and that the building was a total loss.",
)
FIRE_2 = (
    "Two hurt as blaze guts Acme Logistics warehouse on Elm Street",
    "Two employees suffered burns when flames engulfed the Acme Logistics warehouse in "
    "Springfield on Tuesday morning. Fire chief Maria Lopez told reporters 40 firefighters "
    "battled the blaze on Elm Street. Both workers were treated at Mercy Hospital. "
    "Investigators have not determined what started the fire at the warehouse.",
)
BUDGET = (
    "Riverton council approves school budget after long debate",
    "RIVERTON — The city council voted 5-2 on Monday night to approve a $12 million school "
    "budget, ending weeks of debate over teacher salaries and bus routes. Mayor Tom Becker "
    "said the plan would hire 30 new teachers. Opponents on the council argued the budget "
    "relied on optimistic tax revenue forecasts.",
)
QUAKE = (
    "Magnitude 6.1 earthquake shakes northern Chile",
    "A magnitude 6.1 earthquake struck off the coast of northern Chile near Iquique on "
    "Wednesday, the US Geological Survey said. There were no immediate reports of damage "
    "or casualties, and authorities did not issue a tsunami warning. The quake was "
    "centred 40 km deep.",
)


def art(article_id: str, doc: tuple[str, str], hours: float = 0.0, url: str | None = None,
        published: bool = True) -> Article:
    title, text = doc
    return Article(
        id=article_id,
        title=title,
        text=clean_text(text, title),
        url=url,
        source=None,
        published=T0 + timedelta(hours=hours) if published else None,
    )


def stream(clusterer: IncidentClusterer, *articles: Article) -> list[str]:
    return [clusterer.add(a).incident_id for a in articles]


def test_new_then_join_same_event_but_not_an_unrelated_one():
    c = IncidentClusterer()
    first = c.add(art("fire-1", FIRE_1))
    assert first.explanation.decision == "new"
    assert first.incident_id == "inc-fire-1"
    other = c.add(art("budget", BUDGET, 1))
    assert other.explanation.decision == "new"
    second = c.add(art("fire-2", FIRE_2, 3))
    assert second.explanation.decision == "joined"
    assert second.incident_id == "inc-fire-1"
    assert second.duplicate_of is None
    assert second.explanation.score >= second.explanation.threshold
    assert "maria lopez" in second.explanation.shared_entities
    assert second.explanation.shared_terms
    assert second.explanation.time_gap_hours == 3.0
    assert c.add(art("quake", QUAKE, 4)).explanation.decision == "new"
    assert len(c) == 4


# Chinese and Japanese are written without spaces: terms are character bigrams.
ZH_QUAKE_1 = (
    "四川甘孜州发生6.1级地震 暂无人员死亡报告",
    "中国地震台网正式测定，3月2日凌晨4时17分，四川甘孜州泸定县发生6.1级地震，震源深度12公里。"
    "震中附近多个乡镇震感强烈，部分老旧房屋出现墙体开裂。当地应急管理部门已派出救援队伍赶赴震区，"
    "目前暂未收到人员死亡报告。泸定县政府表示，将连夜排查道路和桥梁受损情况。",
)
ZH_QUAKE_2 = (
    "泸定县凌晨遭遇强烈地震 救援队伍连夜赶赴震区",
    "据中国地震台网消息，四川省甘孜州泸定县2日凌晨发生6.1级地震。地震造成当地部分房屋受损，"
    "多条乡村道路因山体滑坡中断。省消防救援总队已调派两百余名消防员前往泸定县开展搜救。"
    "截至发稿时，尚无人员死亡的消息。",
)
ZH_METRO = (
    "上海地铁新线路年底通车 沿线居民出行将更便捷",
    "上海市交通委员会周一宣布，地铁十九号线将于今年年底正式开通运营。新线路全长四十四公里，"
    "共设三十个车站，连接浦东新区和宝山区。市交通部门表示，开通后沿线居民通勤时间预计缩短二十分钟。"
    "目前全线已进入设备调试阶段。",
)
JA_FIRE_1 = (
    "札幌市の住宅で火事 高齢の男性が死亡",
    "2日未明、札幌市北区の木造2階建て住宅から火が出て、約3時間後に消し止められました。"
    "焼け跡から1人の遺体が見つかり、警察はこの家に住む80代の男性とみて身元の確認を進めています。"
    "消防によりますと、出火当時、男性は1人で家にいたということです。"
    "警察と消防が出火の原因を詳しく調べています。",
)
JA_FIRE_2 = (
    "札幌市北区で住宅火災 焼け跡から1人の遺体",
    "札幌市北区で2日未明、木造住宅が全焼する火事がありました。"
    "警察によりますと、焼け跡から性別の分からない遺体が見つかり、"
    "この家に1人で暮らす80代の男性と連絡が取れていないということです。"
    "近所の住民は「煙のにおいがして外に出たら炎が見えた」と話していました。",
)
JA_MUSEUM = (
    "大阪の新しい美術館 来月オープンへ",
    "大阪市中之島に建設されていた新しい美術館が来月15日に開館することになりました。"
    "館内には国内外の現代美術の作品およそ300点が展示される予定です。"
    "市の担当者は「多くの人に足を運んでもらいたい」と話しています。",
)

# Thai is split into dictionary words: the fire is in the same city as the flood, on the same
# day, and letter bigrams or trigrams joined it to the flood.
TH_FLOOD_1 = (
    "น้ำท่วมหนักเชียงใหม่ แม่น้ำปิงล้นตลิ่ง ชาวบ้านกว่า 500 ครัวเรือนเดือดร้อน",
    "ฝนที่ตกหนักต่อเนื่องมาสองวันทำให้แม่น้ำปิงล้นตลิ่งเข้าท่วมพื้นที่อำเภอเมืองเชียงใหม่เมื่อคืนวันพุธ "
    "ชาวบ้านกว่า 500 ครัวเรือนได้รับผลกระทบ บางจุดระดับน้ำสูงกว่าหนึ่งเมตร "
    "เจ้าหน้าที่ป้องกันและบรรเทาสาธารณภัยจังหวัดเชียงใหม่เร่งอพยพผู้สูงอายุและเด็กออกจากพื้นที่ "
    "ผู้ว่าราชการจังหวัดกล่าวว่าได้เปิดศูนย์พักพิงชั่วคราวสามแห่งในตัวเมือง",
)
TH_FLOOD_2 = (
    "ผู้ว่าฯ เชียงใหม่เปิดศูนย์พักพิง หลังน้ำปิงเอ่อท่วมตัวเมือง",
    "ระดับน้ำในแม่น้ำปิงที่สถานีวัดน้ำสะพานนวรัฐพุ่งสูงขึ้นอย่างรวดเร็วหลังฝนตกหนักติดต่อกัน "
    "น้ำได้เอ่อล้นเข้าท่วมบ้านเรือนประชาชนในเขตเทศบาลนครเชียงใหม่กว่า 500 หลังคาเรือน "
    "ผู้ว่าราชการจังหวัดเชียงใหม่สั่งเปิดศูนย์พักพิงชั่วคราว พร้อมส่งเรือและเจ้าหน้าที่ช่วยอพยพผู้ประสบภัย "
    "กรมอุตุนิยมวิทยาเตือนว่าฝนจะยังตกหนักต่อไปอีกสองวัน",
)
TH_MARKET_FIRE = (
    "ไฟไหม้ตลาดวโรรส เชียงใหม่ ร้านค้าเสียหายกว่า 30 ร้าน",
    "เกิดเหตุเพลิงไหม้ที่ตลาดวโรรสหรือกาดหลวง ใจกลางเมืองเชียงใหม่ เมื่อเวลาประมาณตีสองของวันอังคาร "
    "เจ้าหน้าที่ดับเพลิงใช้เวลากว่าสองชั่วโมงจึงควบคุมเพลิงไว้ได้ ร้านค้ากว่า 30 ร้านได้รับความเสียหาย "
    "ไม่มีผู้ได้รับบาดเจ็บ ตำรวจกำลังตรวจสอบหาสาเหตุของเพลิงไหม้ ซึ่งเบื้องต้นคาดว่าเกิดจากไฟฟ้าลัดวงจร",
)

# Khmer and Myanmar, also without spaces between words, are compared by bigrams of their
# orthographic clusters: a flood in Battambang and a market fire in the same town, an
# earthquake in Mandalay and a festival in Yangon.
KM_FLOOD_1 = (
    "ទឹកជំនន់លិចផ្ទះជាង ៥០០ ខ្នងនៅខេត្តបាត់ដំបង",
    "ភ្លៀងធ្លាក់ខ្លាំងរយៈពេលពីរថ្ងៃបានធ្វើឲ្យទឹកទន្លេសង្កែឡើងខ្ពស់ ហើយលិចផ្ទះប្រជាពលរដ្ឋជាង ៥០០ ខ្នង"
    "នៅក្នុងក្រុងបាត់ដំបង។ អាជ្ញាធរខេត្តបានជម្លៀសប្រជាពលរដ្ឋទៅកាន់ទីទួលសុវត្ថិភាព "
    "និងបើកវត្តចំនួនបីជាទីជម្រកបណ្ដោះអាសន្ន។",
)
KM_FLOOD_2 = (
    "អាជ្ញាធរបាត់ដំបងជម្លៀសប្រជាពលរដ្ឋ ក្រោយទឹកទន្លេសង្កែលិចទីក្រុង",
    "ទឹកទន្លេសង្កែបានហៀរចូលលិចផ្ទះប្រជាពលរដ្ឋជាង ៥០០ ខ្នង ក្រោយភ្លៀងធ្លាក់ខ្លាំងជាប់ៗគ្នា។ "
    "អភិបាលខេត្តបាត់ដំបងបានបញ្ជាឲ្យបើកទីជម្រកបណ្ដោះអាសន្ន និងបញ្ជូនទូកទៅជួយសង្គ្រោះប្រជាពលរដ្ឋ"
    "ដែលរងគ្រោះដោយទឹកជំនន់។ ក្រសួងធនធានទឹកព្រមានថាភ្លៀងនឹងនៅតែធ្លាក់ខ្លាំងរយៈពេលពីរថ្ងៃទៀត។",
)
KM_MARKET_FIRE = (
    "ភ្លើងឆេះផ្សារណាត់ក្នុងក្រុងបាត់ដំបង តូបលក់ដូរខូចខាតជាង ៣០",
    "អគ្គិភ័យបានឆេះផ្សារណាត់នៅកណ្ដាលក្រុងបាត់ដំបង កាលពីម៉ោងពីរទៀបភ្លឺថ្ងៃអង្គារ។ "
    "ក្រុមពន្លត់អគ្គិភ័យបានប្រើពេលជាងពីរម៉ោងទើបពន្លត់ភ្លើងបាន ហើយតូបលក់ដូរជាង ៣០ ត្រូវខូចខាត។ "
    "មិនមានអ្នករងរបួសទេ។ ប៉ូលិសកំពុងស៊ើបអង្កេតរកមូលហេតុ "
    "ដែលដំបូងគេសង្ស័យថាបណ្ដាលមកពីឆ្លងចរន្តអគ្គិសនី។",
)
MY_QUAKE_1 = (
    "မန္တလေးတွင် ငလျင်လှုပ် အဆောက်အအုံများ ပြိုကျ",
    "မန္တလေးမြို့အနီးတွင် ယနေ့နံနက် ရစ်ချ်တာစကေး ၆ ဒသမ ၂ အင်အားရှိ ငလျင်လှုပ်ခတ်ခဲ့ပြီး "
    "အဆောက်အအုံအများအပြား ပြိုကျပျက်စီးခဲ့သည်။ ကယ်ဆယ်ရေးအဖွဲ့များသည် ပြိုကျနေသော "
    "အဆောက်အအုံများအောက်တွင် ပိတ်မိနေသူများကို ရှာဖွေနေကြသည်။",
)
MY_QUAKE_2 = (
    "ငလျင်ဒဏ်ကြောင့် မန္တလေးတွင် လူ ၁၂ ဦး သေဆုံး",
    "ယနေ့နံနက် မန္တလေးမြို့တွင် လှုပ်ခတ်ခဲ့သော ငလျင်ကြောင့် လူ ၁၂ ဦး သေဆုံးပြီး အများအပြား "
    "ဒဏ်ရာရရှိခဲ့ကြောင်း ဆေးရုံအာဏာပိုင်များက ပြောကြားသည်။ အဆောက်အအုံများ ပြိုကျခဲ့ပြီး "
    "ကယ်ဆယ်ရေးအဖွဲ့များ ရှာဖွေကယ်ဆယ်ရေး လုပ်ငန်းများ ဆောင်ရွက်နေကြသည်။",
)
MY_FESTIVAL = (
    "ရန်ကုန်တွင် သင်္ကြန်ပွဲတော် စတင်",
    "ရန်ကုန်မြို့တွင် ယနေ့ သင်္ကြန်ရေသဘင်ပွဲတော်ကို စည်ကားစွာ စတင်ကျင်းပခဲ့သည်။ "
    "မြို့တော်ခန်းမရှေ့တွင် ရေကစားမဏ္ဍပ်များ ဆောက်လုပ်ထားပြီး လူထောင်ပေါင်းများစွာ လာရောက်ကြသည်။",
)

# Lao writes final consonants as letters of their own (ຖ້ວມ, flood: ຖ້ ວ ມ): its cluster
# bigrams are coarser ("ວງ", "ອງ" are among the shared terms), and still keep a market
# fire in the same town apart from the flood.
LO_FLOOD_1 = (
    "ນ້ຳຖ້ວມໜັກຢູ່ແຂວງຫຼວງພະບາງ ປະຊາຊົນຫຼາຍກວ່າ 500 ຄອບຄົວໄດ້ຮັບຜົນກະທົບ",
    "ຝົນຕົກໜັກຕິດຕໍ່ກັນສອງມື້ເຮັດໃຫ້ນ້ຳຂອງລົ້ນຝັ່ງ ແລະ ຖ້ວມເຮືອນປະຊາຊົນຫຼາຍກວ່າ 500 ຄອບຄົວ"
    "ໃນເມືອງຫຼວງພະບາງ. ເຈົ້າໜ້າທີ່ແຂວງໄດ້ອົບພະຍົບປະຊາຊົນໄປຢູ່ບ່ອນປອດໄພ "
    "ແລະ ເປີດວັດສາມແຫ່ງເປັນບ່ອນພັກອາໄສຊົ່ວຄາວ.",
)
LO_FLOOD_2 = (
    "ເຈົ້າແຂວງຫຼວງພະບາງສັ່ງອົບພະຍົບປະຊາຊົນ ຫຼັງນ້ຳຂອງຖ້ວມຕົວເມືອງ",
    "ລະດັບນ້ຳຂອງຢູ່ຫຼວງພະບາງໄດ້ຂຶ້ນສູງຢ່າງໄວວາຫຼັງຈາກຝົນຕົກໜັກ ນ້ຳໄດ້ຖ້ວມເຮືອນປະຊາຊົນຫຼາຍກວ່າ 500 "
    "ຄອບຄົວ. ເຈົ້າແຂວງໄດ້ສັ່ງໃຫ້ເປີດບ່ອນພັກອາໄສຊົ່ວຄາວ ແລະ ສົ່ງເຮືອໄປຊ່ວຍອົບພະຍົບຜູ້ປະສົບໄພ.",
)
LO_MARKET_FIRE = (
    "ໄຟໄໝ້ຕະຫຼາດດາລາຢູ່ຫຼວງພະບາງ ຮ້ານຄ້າເສຍຫາຍກວ່າ 30 ຮ້ານ",
    "ເກີດໄຟໄໝ້ຢູ່ຕະຫຼາດດາລາໃຈກາງເມືອງຫຼວງພະບາງ ເວລາປະມານສອງໂມງເຊົ້າວັນອັງຄານ. "
    "ພະນັກງານດັບເພີງໃຊ້ເວລາກວ່າສອງຊົ່ວໂມງຈຶ່ງດັບໄຟໄດ້ ຮ້ານຄ້າກວ່າ 30 ຮ້ານໄດ້ຮັບຄວາມເສຍຫາຍ. "
    "ບໍ່ມີຜູ້ໄດ້ຮັບບາດເຈັບ ຕຳຫຼວດກຳລັງກວດສອບຫາສາເຫດ ເຊິ່ງເບື້ອງຕົ້ນຄາດວ່າເກີດຈາກໄຟຟ້າຊັອດ.",
)


@pytest.mark.parametrize(("first", "second", "unrelated", "shared"), [
    (ZH_QUAKE_1, ZH_QUAKE_2, ZH_METRO, "地震"),
    (JA_FIRE_1, JA_FIRE_2, JA_MUSEUM, "札幌"),
    (TH_FLOOD_1, TH_FLOOD_2, TH_MARKET_FIRE, "ท่วม"),
    (KM_FLOOD_1, KM_FLOOD_2, KM_MARKET_FIRE, "លិច"),
    (MY_QUAKE_1, MY_QUAKE_2, MY_FESTIVAL, "ငလျင်"),
    (LO_FLOOD_1, LO_FLOOD_2, LO_MARKET_FIRE, "ຖ້ວ"),
])
def test_reports_written_without_spaces_join_their_event_and_not_an_unrelated_one(
        first, second, unrelated, shared):
    c = IncidentClusterer()
    assert stream(c, art("a", first), art("other", unrelated, 1)) == ["inc-a", "inc-other"]
    joined = c.add(art("b", second, 3))
    assert joined.incident_id == "inc-a"
    assert joined.duplicate_of is None
    assert shared in joined.explanation.shared_terms  # as written: the text has it so
    assert c.add(art("later", unrelated, 4)).incident_id == "inc-other"


@pytest.mark.parametrize(("original", "unrelated", "copy"), [
    (ZH_QUAKE_1, ZH_METRO, (
        "泸定6.1级地震：震区房屋受损 暂无死亡报告",
        "来源：新华网\n"
        + ZH_QUAKE_1[1].replace("4时17分", "4点17分").replace("将连夜", "将于当晚")
        + "\n（完）\n责任编辑：李华")),
    (JA_FIRE_1, JA_MUSEUM, (
        "札幌市北区の住宅で火事、高齢男性が死亡",
        "【共同通信】\n" + JA_FIRE_1[1].replace("約3時間後", "およそ3時間後")
        + "\n無断転載を禁じます。")),
    (TH_FLOOD_1, TH_MARKET_FIRE, (
        "แม่น้ำปิงล้นตลิ่ง น้ำท่วมเมืองเชียงใหม่",
        "สำนักข่าวไทย\n" + TH_FLOOD_1[1].replace("สามแห่ง", "3 แห่ง")
        + "\nติดตามข่าวสารได้ทุกช่องทาง")),
])
def test_a_syndicated_copy_written_without_spaces_is_a_near_duplicate(original, unrelated, copy):
    c = IncidentClusterer()
    c.add(art("orig", original))
    c.add(art("other", unrelated, 1))
    found = c.add(art("copy", copy, 2))
    assert found.duplicate_of == "orig"
    assert found.explanation.duplicate_kind == "near"


def test_exact_duplicate_by_url_and_by_text():
    c = IncidentClusterer()
    c.add(art("a", FIRE_1, url="https://www.example.com/news/fire?utm_source=rss"))
    by_url = c.add(art("b", BUDGET, 1, url="http://example.com/news/fire/"))
    assert by_url.duplicate_of == "a"
    assert by_url.explanation.duplicate_kind == "url"
    assert by_url.incident_id == "inc-a"
    by_text = c.add(art("c", FIRE_1, 2, url="https://other.example.org/copy"))
    assert by_text.duplicate_of == "a"
    assert by_text.explanation.duplicate_kind == "content"
    assert by_text.explanation.decision == "duplicate"



@pytest.mark.parametrize("url", [
    "javascript:void(0)", "mailto:desk@example.com", "urn:uuid:6e8bc430-9c3a-11d9",
    "tag:example.com,2024:entry", "http://", "file:///news/story.html",
])
def test_addresses_that_name_no_web_page_make_no_article_a_duplicate(url: str) -> None:
    """Every such address had the same key ("javascript/", "urn/", "/"): a second article
    with one, on another story, was a duplicate of the first ("the same address")."""
    c = IncidentClusterer()
    first = c.add(art("a", FIRE_1, url=url))
    other = c.add(art("b", BUDGET, 1, url=url))
    assert other.duplicate_of is None and other.incident_id != first.incident_id
    # (The address is still the article's: a copy of the same text is one by its text.)
    assert c.add(art("c", FIRE_1, 2, url=url)).explanation.duplicate_kind == "content"


def test_near_duplicate_with_small_edits_and_different_boilerplate():
    title, text = FIRE_1
    edited = (
        text.replace("early Tuesday", "early on Tuesday").replace("three hours", "3 hours")
        + "\nShare this article\nCopyright 2015 Example Media. All rights reserved."
    )
    c = IncidentClusterer()
    c.add(art("orig", FIRE_1))
    copy = c.add(art("copy", (title + " - Example Media", edited), 5))
    assert copy.duplicate_of == "orig"
    assert copy.explanation.duplicate_kind == "near"
    assert copy.incident_id == "inc-orig"


def test_same_event_in_other_words_is_not_a_duplicate():
    c = IncidentClusterer()
    c.add(art("fire-1", FIRE_1))
    second = c.add(art("fire-2", FIRE_2, 1))
    assert second.duplicate_of is None


def test_same_body_under_an_unrelated_headline_is_not_a_duplicate():
    paywall = "Already a member? " + " ".join(f"word{i}" for i in range(60))
    c = IncidentClusterer()
    c.add(art("p1", ("Man shot outside bar in Dayton", paywall)))
    second = c.add(art("p2", ("Council approves budget in Riverton", paywall), 1))
    assert second.duplicate_of is None


def test_follow_up_weeks_later_revives_the_dormant_incident():
    c = IncidentClusterer(ClusterConfig(window_days=7, incident_days=180))
    first = c.add(art("fire-1", FIRE_1))
    c.add(art("budget", BUDGET, hours=24))
    later = c.add(art("fire-2", FIRE_2, hours=24 * 30))
    assert c.incident_of("fire-1") is None  # the article itself has left the window
    assert later.incident_id == first.incident_id
    assert later.explanation.decision == "joined"
    assert later.explanation.detail["dormant_days"] == 30.0
    assert later.explanation.time_gap_hours == 24 * 30


def test_incident_memory_expires():
    c = IncidentClusterer(ClusterConfig(window_days=7, incident_days=20))
    first = c.add(art("fire-1", FIRE_1))
    much_later = c.add(art("fire-2", FIRE_2, hours=24 * 30))
    assert much_later.incident_id != first.incident_id
    assert much_later.explanation.decision == "new"


def test_eviction_bounds_memory():
    c = IncidentClusterer(ClusterConfig(window_days=2, incident_days=4))
    docs = [FIRE_1, BUDGET, QUAKE]
    for day in range(30):
        for k, doc in enumerate(docs):
            c.add(art(f"d{day}-{k}", doc, hours=24 * day + k))
        assert len(c) <= 3 * 3  # two days back plus today
        assert c.incident_count <= 3 * 7  # at most one incident per article of the last week
    dropped = c.evict(T0 + timedelta(days=60))
    assert dropped > 0
    assert len(c) == 0
    assert c.incident_count == 0
    assert c.incident_of("d29-0") is None


def test_an_archive_replayed_behind_a_newer_article_is_evicted_by_its_own_time():
    # ``newsflow run`` has taken today's news; a replay of an older archive follows.
    c = IncidentClusterer(ClusterConfig(window_days=2, incident_days=4))
    c.add(art("today", FIRE_1, hours=24 * 3650))
    for day in range(30):
        for k, doc in enumerate([BUDGET, QUAKE]):
            c.add(art(f"d{day}-{k}", doc, hours=24 * day + k))
        assert len(c) <= 2 * 3 + 1  # two days back plus the day, and today's article
    # Today's article is still held: the next report of its story joins it.
    assert c.add(art("today-2", FIRE_2, hours=24 * 3650 + 1)).incident_id == "inc-today"
    # An article a feed dated ten years ahead does not stop the window of the live stream.
    c = IncidentClusterer(ClusterConfig(window_days=2, incident_days=4))
    c.add(art("typo", QUAKE, hours=24 * 3650))
    for hour in range(0, 24 * 30, 8):
        c.add(art(f"live-{hour}", BUDGET, hours=hour))
    assert len(c) <= 3 * 3 + 1


def test_one_article_dated_years_ahead_forgets_no_incident():
    # An archive replay with one date typed years ahead: the jump empties the window (one
    # article cannot be told from a real gap), but the stories it held stay as summaries,
    # so the next report of one still joins it.
    c = IncidentClusterer()
    first = c.add(art("fire-1", FIRE_1))
    c.add(art("budget", BUDGET, hours=1))
    c.add(art("typo", QUAKE, hours=24 * 365 * 80))
    assert len(c) == 1  # the window followed the typo
    later = c.add(art("fire-2", FIRE_2, hours=2))
    assert later.incident_id == first.incident_id
    assert c.incident_count == 3
    # A stream that really moves on forgets them once a few articles confirm its time.
    c = IncidentClusterer(ClusterConfig(window_days=2, incident_days=4))
    c.add(art("fire-1", FIRE_1))
    for k in range(ClusterConfig().follow_behind + 1):
        c.add(art(f"later-{k}", QUAKE, hours=24 * 365 + k))
    assert not c.knows_incident("inc-fire-1")


def test_redelivery_is_idempotent():
    c = IncidentClusterer()
    first = c.add(art("fire-1", FIRE_1))
    c.add(art("fire-2", FIRE_2, 1))
    again = c.add(art("fire-1", FIRE_1))
    assert again.redelivery
    assert again.incident_id == first.incident_id
    assert again.explanation == first.explanation
    assert len(c) == 2


def test_incident_ids_are_deterministic_across_fresh_clusterers():
    docs = [art("fire-1", FIRE_1), art("budget", BUDGET, 1), art("fire-2", FIRE_2, 2),
            art("quake", QUAKE, 3)]
    assert stream(IncidentClusterer(), *docs) == stream(IncidentClusterer(), *docs)
    assert stream(IncidentClusterer(), *docs)[0] == "inc-fire-1"


def test_undated_articles_cluster_without_time_evidence():
    c = IncidentClusterer()
    first = c.add(art("fire-1", FIRE_1, published=False))
    c.add(art("budget", BUDGET, published=False))
    second = c.add(art("fire-2", FIRE_2, published=False))
    assert second.incident_id == first.incident_id
    assert second.explanation.time_gap_hours is None


def test_headline_only_articles():
    c = IncidentClusterer()
    a = c.add(art("h1", ("Magnitude 6.1 earthquake shakes northern Chile near Iquique", "")))
    b = c.add(art("h2", ("Riverton council approves school budget", ""), 1))
    d = c.add(art("h3", ("Strong earthquake hits Chile's north near Iquique, no tsunami", ""), 2))
    e = c.add(art("h4", ("Magnitude 6.1 earthquake shakes northern Chile near Iquique", ""), 3))
    assert b.incident_id != a.incident_id
    assert d.incident_id == a.incident_id
    assert e.duplicate_of == "h1"


def test_restore_rebuilds_the_same_state_as_a_replay():
    docs = [art("fire-1", FIRE_1), art("budget", BUDGET, 1), art("fire-2", FIRE_2, 2),
            art("copy", FIRE_1, 3)]
    replayed = IncidentClusterer()
    decisions = [replayed.add(a) for a in docs]
    restored = IncidentClusterer()
    for a, d in zip(docs, decisions, strict=True):
        restored.restore(a, d.incident_id, d.duplicate_of)
    assert len(restored) == len(replayed)
    nxt = [art("quake", QUAKE, 4), art("fire-3", (FIRE_2[0], FIRE_2[1] + " Elm Street."), 5)]
    assert [restored.add(a) for a in nxt] == [replayed.add(a) for a in nxt]
    # A restored article is known: delivering it again changes nothing.
    again = restored.add(docs[2])
    assert again.redelivery and again.incident_id == decisions[2].incident_id


def _seed(name: str) -> Article:
    title, body = derive_title((SEEDS / name).read_text(encoding="utf-8"))
    return Article(id=name.split("_")[1].removesuffix(".txt"), title=title,
                   text=clean_text(body, title), url=None, source=None,
                   published=T0)


SEED_FILES = ("000_bb8b3b49fe888184.txt", "002_dd6372bf12c42b91.txt")


def test_seed_reports_fold_into_one_incident():
    c = IncidentClusterer()
    first, second = (c.add(_seed(name)) for name in SEED_FILES)
    assert second.incident_id == first.incident_id
    assert second.duplicate_of is None  # they share no sentence: same incident, not a copy


def test_unrelated_articles_do_not_join_the_seed_incident():
    from tests.conftest import shared_path
    path = shared_path("incidents", "gva-dev.jsonl")
    from processors.offline import row_to_article

    c = IncidentClusterer()
    seed_incident = {c.add(_seed(name)).incident_id for name in SEED_FILES}
    assert len(seed_incident) == 1
    rows = []
    for name in ("gva-dev.jsonl", "ecbplus-dev.jsonl", "uci-headlines-dev.jsonl"):
        with open(path.parent / name, encoding="utf-8") as fh:
            rows += [json.loads(line) for _, line in zip(range(20), fh, strict=False)]
    joined = []
    for row in rows:
        article = row_to_article({**row, "published": T0.isoformat()})
        if c.add(article).incident_id in seed_incident:
            joined.append(article.id)
    assert joined == []


@pytest.mark.parametrize("order", [SEED_FILES, SEED_FILES[::-1]])
def test_seeds_fold_in_either_order(order):
    c = IncidentClusterer()
    ids = {c.add(_seed(name)).incident_id for name in order}
    assert len(ids) == 1


def test_dormant_incidents_are_capped():
    def run(cap: int) -> IncidentClusterer:
        c = IncidentClusterer(ClusterConfig(window_days=1, incident_days=365, max_incidents=cap))
        for day in range(12):
            words = " ".join(f"topic{day}term{k}" for k in range(40))
            c.add(art(f"d{day}", (f"Story{day} about thing{day}", words), hours=48 * day))
            assert c.incident_count <= cap
        return c

    assert run(100).incident_count == 12  # all distinct, all remembered
    capped = run(4)
    assert capped.incident_count == 4
    assert len(capped) == 1


def test_restoring_older_articles_rebuilds_dormant_incidents():
    docs = [art("fire-1", FIRE_1), art("budget", BUDGET, 1)]
    follow_up = art("fire-2", FIRE_2, hours=24 * 20)
    replayed = IncidentClusterer()
    decisions = [replayed.add(a) for a in docs]
    restored = IncidentClusterer()
    for a, d in zip(docs, decisions, strict=True):
        restored.restore(a, d.incident_id, d.duplicate_of)
    assert restored.add(follow_up) == replayed.add(follow_up)
    assert restored.incident_of("fire-2") == "inc-fire-1"


def test_vocabulary_table_is_bounded():
    c = IncidentClusterer(ClusterConfig(max_vocabulary=200))
    for day in range(40):
        words = " ".join(f"w{day}x{k}" for k in range(30))
        c.add(art(f"v{day}", (f"title{day} common words", f"{words} common words"), hours=day))
        assert len(c._df) <= 200
    assert "common" in c._df  # frequent terms survive the pruning


def test_features_pick_out_ages_full_names_and_streets():
    from processors.features import extract, streets

    feats = extract(
        "Teen shot near school",
        "Police said Rico Doyle, a 14-year-old student, was shot in the 700 block of "
        "North Main Street on Friday. A 32-year-old man was arrested at 1234 Elm Ave. later.",
    )
    assert feats.ages == {"14", "32"}
    assert "rico doyle" in feats.names
    assert feats.streets == {"main", "elm"}
    assert streets("No address here, only 12 people on Main.") == frozenset()
    assert streets("the 100 block of West Martin Luther King Boulevard") == {
        "martin luther king"}


def _springfield_report(title: str, text: str, days: float,
                        config: ClusterConfig | None = None) -> Explanation:
    """The explanation of a report ``days`` after a first one on a Springfield killing."""
    clusterer = IncidentClusterer(config)
    when = datetime(2024, 5, 1, tzinfo=UTC)
    clusterer.add(Article(
        id="first", title="Man shot dead in Springfield",
        text="A 24-year-old man was shot and killed in the 700 block of Elm Street in "
             "Springfield late Friday, police said. Officers found him on the sidewalk.",
        published=when))
    decision = clusterer.add(Article(id="later", title=title, text=text,
                                     published=when + timedelta(days=days)))
    assert decision.explanation.score is not None
    return decision.explanation


def _follow_up_score(street: str, age: str, config: ClusterConfig | None = None) -> float:
    return _springfield_report(
        "Arrest made in Springfield killing",
        f"Springfield police arrested a suspect in the killing of a {age}-year-old man "
        f"in the 700 block of {street} Street. The suspect faces a murder charge.",
        20, config).score


def test_shared_street_and_age_raise_the_score_and_conflicts_lower_it():
    blind = ClusterConfig(w_street_match=0.0, w_street_conflict=0.0, w_age_match=0.0,
                          w_age_conflict=0.0)
    same, same_blind = _follow_up_score("Elm", "24"), _follow_up_score("Elm", "24", blind)
    # Beyond what the words alone say: a shared street or age is evidence, a different one
    # is evidence against.
    street_gap = same - _follow_up_score("Oak", "24")
    age_gap = same - _follow_up_score("Elm", "61")
    assert street_gap > same_blind - _follow_up_score("Oak", "24", blind) + 1.0
    assert age_gap > same_blind - _follow_up_score("Elm", "61", blind) + 1.0


def test_an_explanation_names_the_facts_that_moved_its_score():
    def facts(street: str, age: str) -> set[str]:
        return {fact for fact in _springfield_report(
            "Arrest made in Springfield killing",
            f"Springfield police arrested a suspect in the killing of a {age}-year-old man "
            f"in the 700 block of {street} Street.", 20).detail
            if fact.endswith(("_match", "_conflict"))}

    # ("Elm Street" is also two capitalised words, a full name rare elsewhere.)
    assert facts("Elm", "24") == {"street_match", "age_match", "name_match"}
    assert facts("Oak", "61") == {"street_conflict", "age_conflict"}


def _late_report(title: str, config: ClusterConfig | None = None) -> Explanation:
    """The explanation of a report 200 days after the first one, under ``title``."""
    return _springfield_report(
        title, "The killing of a 24-year-old man in the 700 block of Elm Street in "
        "Springfield shocked the neighbourhood, police said.", 200, config)


def test_a_court_stage_months_later_pays_less_for_the_gap():
    no_relief = ClusterConfig(follow_up_time_relief=0.0)
    court = "Man sentenced in Springfield killing"
    # Half the time penalty is waived: 0.5 * 0.676 * log(201) = 1.79.
    waived = 0.5 * ClusterConfig().w_time * math.log1p(200)
    relieved = _late_report(court)
    assert relieved.score - _late_report(court, no_relief).score == (
        pytest.approx(waived, abs=1e-3))  # (scores are shown to 4 places)
    assert relieved.detail["court_follow_up"] == 1.0  # the explanation says why
    # Another report months later (a new shooting in the same town, mostly) pays in full.
    other = "Neighbours remember Springfield killing"
    assert _late_report(other).score == pytest.approx(_late_report(other, no_relief).score)
    assert "court_follow_up" not in _late_report(other).detail



def test_a_court_stage_headline_without_a_body_is_not_said_to_be_relieved():
    # Headline-only articles have their own time weight, which the relief leaves alone.
    headline = "Man sentenced in Springfield killing"
    explanations = [_springfield_report(headline, "", 200, config)
                    for config in (None, ClusterConfig(follow_up_time_relief=0.0))]
    assert explanations[0].score == explanations[1].score
    assert "court_follow_up" not in explanations[0].detail


def _after_a_recall(title: str, gap_hours: float, spacing_hours: float,
                    config: ClusterConfig | None = None) -> Explanation:
    """The explanation of headline ``title``, ``gap_hours`` after the last of three headlines
    of a recall published ``spacing_hours`` apart (an unrelated story between them)."""
    c = IncidentClusterer(config)
    recall = ("Acme recalls blenders over fire risk",
              "Acme blender recall: fire risk prompts action",
              "Fire risk forces Acme to recall 2 million blenders")
    for n, headline in enumerate(recall):
        c.add(art(f"recall-{n}", (headline, ""), n * spacing_hours))
        c.add(art(f"other-{n}", (("Riverton council approves school budget",
                                  "Chile earthquake shakes Iquique",
                                  "Springfield warehouse fire injures two")[n], ""),
                  n * spacing_hours + 0.01))
    return c.add(art("late", (title, ""), 2 * spacing_hours + gap_hours)).explanation


def test_a_story_told_in_minutes_counts_a_later_gap_in_its_own_pace():
    days = ClusterConfig(pace_min_hours=0.0)
    widened = "Acme blender recall widens after new fire reports"
    # Reports 6 minutes apart: the 30 hours since the last are counted in 2-hour steps (the
    # least pace), not in days: log1p(30 / 2) - log1p(30 / 24) more of the time weight.
    paced = _after_a_recall(widened, 30, 0.1)
    more = ClusterConfig().headline_time * (math.log1p(15) - math.log1p(30 / 24))
    assert _after_a_recall(widened, 30, 0.1, days).score - paced.score == pytest.approx(
        more, abs=1e-3)  # (scores are shown to 4 places)
    assert paced.decision == "joined"  # still the story: most of its words
    assert paced.detail["pace_hours"] == 2.0  # the explanation says how the gap was counted
    # A report sharing less, a day after the burst: another story, no longer joined to it.
    toasters = "Acme recalls toasters too"
    assert _after_a_recall(toasters, 30, 0.1, days).decision == "joined"
    assert _after_a_recall(toasters, 30, 0.1).decision == "new"


def test_a_story_told_over_days_counts_a_gap_in_days():
    toasters = "Acme recalls toasters too"
    # Reports 30 hours apart: a gap of 30 hours is counted in days, as without a pace.
    slow = _after_a_recall(toasters, 30, 30)
    assert slow == _after_a_recall(toasters, 30, 30, ClusterConfig(pace_min_hours=0.0))
    assert slow.decision == "joined"
    assert "pace_hours" not in slow.detail


def test_reports_without_a_publication_time_do_not_quicken_a_storys_pace():
    recall = ("Acme recalls blenders over fire risk",
              "Acme blender recall: fire risk prompts action",
              "Fire risk forces Acme to recall 2 million blenders")
    c = IncidentClusterer()
    c.add(art("recall-0", (recall[0], "")))
    # Two more reports from feeds that give no publication time: they tell nothing of how
    # fast the story was told (its span is still one report's, not minutes over three).
    for n in (1, 2):
        c.add(art(f"recall-{n}", (recall[n], ""), published=False))
    late = c.add(art("late", ("Acme recalls toasters too", ""), 30)).explanation
    assert "pace_hours" not in late.detail  # the gap counted in days
    assert late.decision == "joined"  # (with the gap in 2-hour steps: a new incident)


def test_a_report_from_before_a_story_told_in_minutes_counts_its_gap_in_days():
    recall = ("Acme recalls blenders over fire risk",
              "Acme blender recall: fire risk prompts action",
              "Fire risk forces Acme to recall 2 million blenders")
    early = art("early", ("Acme recalls toasters too", ""))
    in_order = IncidentClusterer()
    in_order.add(early)
    for n, headline in enumerate(recall):  # a day later, minutes apart
        joined = in_order.add(art(f"recall-{n}", (headline, ""), 30 + n / 10))
        assert joined.explanation.decision == "joined"
    # The same report delivered after the burst (a feed read late): its gap is before the
    # story, where the pace the story was told in says nothing; it joins as in order.
    late = IncidentClusterer()
    for n, headline in enumerate(recall):
        late.add(art(f"recall-{n}", (headline, ""), 30 + n / 10))
    delivered_late = late.add(early).explanation
    assert "pace_hours" not in delivered_late.detail
    assert delivered_late.decision == "joined"


def test_the_pace_of_an_incident_is_the_mean_time_between_its_reports_within_bounds():
    hour = 3600.0
    assert _pace_hours(36 * hour, 4, 2.0) == 12.0  # 3 gaps of 12 hours
    assert _pace_hours(0.2 * hour, 3, 2.0) == 2.0  # minutes apart: the least pace
    assert _pace_hours(10 * 24 * hour, 3, 2.0) == 24.0  # days apart: a day, as before
    assert _pace_hours(0.0, 1, 2.0) == 24.0  # one report has no pace yet
    assert _pace_hours(36 * hour, 4, 0.0) == 24.0  # off


def _after_a_hearing(title: str, config: ClusterConfig | None = None,
                     others: tuple[str, ...] = ()) -> Explanation:
    """The explanation of headline ``title`` after six headlines of a governor's hearing
    and one of a side story of it (and ``others``), minutes apart."""
    c = IncidentClusterer(config)
    hearing = ("Carney grilled by MPs over forex rigging claims",
               "Bank of England governor Carney faces MPs on forex scandal",
               "Carney tells MPs forex scandal could be worse than Libor",
               "Forex probe: Carney promises ruthless inquiry at Bank of England",
               "MPs question Carney on Bank of England forex oversight",
               "Carney: Bank of England staff may face forex questions",
               "Carney says RBS may have to leave an independent Scotland", *others)
    for n, headline in enumerate(hearing):
        c.add(art(f"hearing-{n}", (headline, ""), n / 60))
    return c.add(art("late", (title, ""), len(hearing) / 60)).explanation


def test_a_report_fitting_two_stories_about_as_well_joins_the_one_with_more_reports():
    both = "Carney tells of forex scandal worse than Libor, RBS may leave"
    # On words alone the side story (one report) scores 1.870, the hearing (six) 1.601;
    # with 0.2 * ln(6) = 0.358 for its six reports the hearing is the likelier home.
    alone = _after_a_hearing(both, ClusterConfig(w_size_rank=0.0))
    assert alone.decision == "joined" and alone.score == pytest.approx(1.870, abs=1e-3)
    sized = _after_a_hearing(both)
    assert sized.decision == "joined" and sized.score == pytest.approx(1.601, abs=1e-3)
    assert sized.detail["smaller_incident_score"] == alone.score  # the explanation says why
    # A report clearly of the side story still joins it.
    side = _after_a_hearing("Carney: RBS may leave an independent Scotland")
    assert side.score > sized.score and "smaller_incident_score" not in side.detail
    assert "rbs" in side.shared_terms  # (the hearing has no such word)


def test_a_smaller_incident_merged_with_the_story_taken_is_not_said_to_be_passed_over():
    # The report fits the side story (4.281) a little better than the hearing (4.064), and
    # both so well that they are one incident: the side story is merged into the hearing.
    both = ("Carney tells MPs of ruthless Bank of England forex inquiry, scandal worse than "
            "Libor; RBS may leave independent Scotland")
    merged = _after_a_hearing(both)
    assert merged.decision == "merged" and merged.merged_from == ["inc-hearing-6"]
    assert merged.score == pytest.approx(4.064, abs=1e-3)
    assert "smaller_incident_score" not in merged.detail  # the why line said it was


def test_two_incidents_sure_to_be_the_article_s_are_merged_though_a_bigger_story_fits():
    # A headline of two stories: the side story (5.225) and a third, on Libor (2.579), are
    # both over the merge threshold, so they are one incident. The hearing (-0.306) is
    # joinable, and with its six reports, at this size weight, the likelier home by size
    # alone: it was taken, and the two sure incidents were left apart.
    config = ClusterConfig(join_threshold=-1.0, merge_threshold=2.0, w_size_rank=3.5)
    two = "Carney tells MPs RBS may leave an independent Scotland; Lloyds fined over Libor rigging"
    merged = _after_a_hearing(two, config, ("Lloyds fined over Libor rigging by regulators",))
    assert merged.decision == "merged" and merged.merged_from == ["inc-hearing-7"]
    assert merged.score == pytest.approx(5.225, abs=1e-3)  # the side story's, where it went
    assert "smaller_incident_score" not in merged.detail


def test_the_likeliest_home_weighs_a_story_by_its_size():
    # 2.9 + 0.2 * ln(2) = 3.039 beats 3.0 + 0.2 * ln(1); 2.8 + 0.139 does not.
    assert _likeliest_home([3.0, 2.9], [1, 2], 0.2) == 1
    assert _likeliest_home([3.0, 2.8], [1, 2], 0.2) == 0
    assert _likeliest_home([1.0, 1.0], [4, 4], 0.2) == 0  # a tie: the better-scored first
    assert _likeliest_home([3.0, 2.9], [1, 2], 0.0) == 0  # off: the score alone


def test_dates_mentioned_are_read_relative_to_the_article():
    assert dates("charged in the June 21 shooting; a hearing on Sept. 9th, 2012. Mayday 5, "
                 "Marching 4") == {(6, 21, 0), (9, 9, 2012)}
    # Capitalised words before a number that are not months, or months inside a word.
    assert dates("Mayor 5 said; Dog 12, 2013; x_May 7; Janu 4; Sundays 3") == frozenset()
    assert dates("on June 21, 1812") == {(6, 21, 1812)}  # an old year is a year, not none
    # A month alone, after a word that makes it a time; not a name, nor a date's month.
    assert dates("slain in June; arrested last March, in April 2015, since July of 2014, "
                 "in June 21 shooting") == {(6, 0, 0), (3, 0, 0), (4, 0, 2015), (7, 0, 2014),
                                            (6, 21, 0)}
    assert dates("June Smith said; Marching in April's wake; May 40; may in May") == {
        (5, 0, 0)}
    day = datetime(2025, 1, 5, 15, tzinfo=UTC).timestamp()
    upcoming = ClusterConfig().upcoming_days * 86_400

    def spans(*mentioned: tuple[int, int, int], at: float = day) -> list[tuple[datetime, ...]]:
        return [tuple(datetime.fromtimestamp(t, UTC) for t in span)
                for span in _referenced_days(frozenset(mentioned), at, upcoming)]

    def named(*mentioned: tuple[int, int, int], at: float = day) -> list[datetime]:
        found = spans(*mentioned, at=at)
        assert all(first == last for first, last in found)  # dates: one day each
        return [first for first, _ in found]

    # No year: the latest such day up to the article's next day, across a new year too.
    assert named((1, 6, 0), (12, 30, 0), (2, 30, 0)) == [datetime(2025, 1, 6, tzinfo=UTC),
                                                         datetime(2024, 12, 30, tzinfo=UTC)]
    new_years_eve = datetime(2024, 12, 31, 15, tzinfo=UTC).timestamp()
    assert named((1, 1, 0), at=new_years_eve) == [datetime(2025, 1, 1, tzinfo=UTC)]
    assert named((2, 29, 0)) == [datetime(2024, 2, 29, tzinfo=UTC)]
    # A day to come is no day of the events: a hearing on "Jan. 26", a given year ahead.
    assert named((1, 26, 0), (1, 7, 0), (3, 1, 2025)) == []
    # Further ahead it is last year's ("the March 12 shooting" in January).
    assert named((3, 12, 0)) == [datetime(2024, 3, 12, tzinfo=UTC)]
    assert named((6, 1, 2023)) == [datetime(2023, 6, 1, tzinfo=UTC)]
    assert _referenced_days(frozenset({(6, 1, 0)}), None, upcoming) == ()
    # A month alone: all its days, the latest such month up to the article's next day.
    assert spans((12, 0, 0), (1, 0, 2024)) == [
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 31, tzinfo=UTC)),
        (datetime(2024, 12, 1, tzinfo=UTC), datetime(2024, 12, 31, tzinfo=UTC)),
    ]
    assert spans((1, 0, 0)) == [(datetime(2025, 1, 1, tzinfo=UTC),
                                 datetime(2025, 1, 31, tzinfo=UTC))]


@pytest.mark.parametrize("mention", [" on May 3", " in May"])
def test_a_follow_up_naming_the_day_or_month_of_the_events_is_measured_from_it(mention: str):
    def follow_up(mention: str) -> Explanation:
        c = IncidentClusterer()
        when = datetime(2024, 5, 3, 12, tzinfo=UTC)
        c.add(Article(
            id="first", title="Man shot dead in Springfield",
            text="A 24-year-old man was shot and killed in the 700 block of Elm Street in "
                 "Springfield late Friday, police said. Officers found him on the sidewalk.",
            published=when))
        return c.add(Article(
            id="later", title="Arrest made in Springfield killing",
            text=f"Springfield police arrested a suspect in the killing{mention} of a "
                 "24-year-old man in the 700 block of Elm Street. He faces a murder charge.",
            published=when + timedelta(days=60))).explanation

    named, plain = follow_up(mention), follow_up("")
    # Two months later: without the day the gap is the two months; with it (or its month),
    # none, and the time penalty (0.676 * log(61) = 2.8) is gone.
    assert plain.time_gap_hours == named.time_gap_hours == 24 * 60  # what the user is shown
    assert "named_day_gap_hours" not in plain.detail
    assert named.detail["named_day_gap_hours"] == 0.0  # what is scored
    assert named.score is not None and plain.score is not None
    assert named.score > plain.score + 2.0


FIRST_REPORT = (
    "Frankfort teen killed in accidental shooting",
    "A boy died Sunday after a hunting rifle fired inside a barn, deputies said. The boy "
    "and two cousins were cleaning the rifle in the barn after a deer hunt. The cousins "
    "called deputies, and paramedics took the boy to a hospital, where he died. Deputies "
    "said the rifle belonged to an uncle, and the deer hunt had ended an hour before. "
    "Relatives said the cousins hunted deer every season from the uncle's farmhouse, and "
    "paramedics said the hospital was twenty minutes from the farmhouse. Deputies expect "
    "no charges for the cousins or the uncle; relatives asked for privacy. Hunting rifles "
    "should be unloaded before cleaning, deputies said. The boy was Dakota Reyes.",
)
FOLLOW_UP = (
    "Coroner rules Frankfort teen's shooting death accidental",
    "The coroner ruled Monday that the shooting death of Dakota Reyes, a Frankfort teen "
    "killed last month, was accidental. Dakota Reyes was 16.",
)
LOOK_ALIKE = (
    "Teen killed in accidental shooting in Carlisle",
    "A 16-year-old boy was killed Sunday when a handgun went off in an apartment in "
    "Carlisle, police said. Officers said Marcus Tate had been showing the gun to friends. "
    "Police were trying to learn who owned the handgun.",
)


def test_a_dormant_incident_is_found_again_by_its_headline_words_and_names():
    c = IncidentClusterer(ClusterConfig(window_days=7, incident_days=90))
    c.add(art("first", FIRST_REPORT))
    assert c.add(art("look-alike", LOOK_ALIKE, hours=2)).explanation.decision == "new"
    later = c.add(art("later", FOLLOW_UP, hours=24 * 21))
    assert c.incident_of("first") is None  # gone from the window: a dormant summary
    # The first report's strongest terms are about the hunt (rifle, barn, deer); a brief
    # follow-up three weeks later shares its headline's town and the boy's name, and
    # through those the dormant report is still looked up and weighed: it is the best
    # candidate (the gap is to it). The look-alike is looked up too, by the headline
    # words they share ("teen", "accidental").
    assert later.explanation.candidates == 2
    assert later.explanation.time_gap_hours == 24 * 21


def test_an_incident_sharing_two_rare_names_is_scored_though_the_lookup_ranks_it_out():
    def follow_up(config: ClusterConfig) -> Explanation:
        c = IncidentClusterer(config)
        c.add(art("first", ("Man shot dead at Riverton gas station",
                            "A man was shot dead at a gas station in Riverton on Friday. Police "
                            "named him as Rico Doyle and said Dane Mercer, a clerk, saw the "
                            "gunman drive off in a truck.")))
        c.add(art("other", ("Teen charged with murder in Riverton court",
                            "A teen was charged with murder in Riverton court on Monday. The "
                            "judge set bail at a hearing in the Riverton court."), hours=24))
        return c.add(art("later", ("Man charged with murder in Riverton court",
                                   "Prosecutors charged a man with murder in Riverton court in "
                                   "the killing of Rico Doyle; Dane Mercer is to testify."),
                         hours=48)).explanation

    # Looked up by its strongest term and its headline words, one candidate kept: the
    # court story's words win the place, and the follow-up joins the court story ...
    lookup = {"max_candidates": 1, "candidate_terms": 1}
    alone = follow_up(ClusterConfig(name_candidates=0, **lookup))
    assert alone.candidates == 1
    assert "rico doyle" not in alone.shared_entities
    # ... unless the killing whose victim and witness it names is scored as well.
    named = follow_up(ClusterConfig(**lookup))
    assert named.candidates == 2
    assert {"rico doyle", "dane mercer"} <= set(named.shared_entities)


def _year_score(config: ClusterConfig, dated: bool) -> float:
    c = IncidentClusterer(config)
    c.add(Article(
        id="first", title="Man shot dead on Elm Street in Springfield",
        text="A 24-year-old man was shot and killed on Elm Street in Springfield early on New "
             "Year's Day 2015, police said. Officers found him on the sidewalk.",
        published=T0 if dated else None))
    decision = c.add(Article(
        id="later", title="Suspect charged in Elm Street killing in Springfield",
        text="Springfield police charged a suspect in the killing of a man on Elm Street. The "
             "suspect was convicted of robbery in 2009 and released in late 2009, records show.",
        published=T0 + timedelta(days=30) if dated else None))
    assert decision.explanation.score is not None
    return decision.explanation.score


def test_a_year_mentioned_counts_against_an_incident_only_without_dates():
    # The follow-up mostly mentions 2009 (the suspect's record), the report 2015. With
    # dates on both the gap says when; without them the years are all there is.
    blind = ClusterConfig(w_year_conflict=0.0)
    assert _year_score(ClusterConfig(), dated=True) == _year_score(blind, dated=True)
    assert _year_score(ClusterConfig(), dated=False) < _year_score(blind, dated=False) - 2.0


def test_a_body_of_a_few_leftover_words_counts_as_no_body():
    def second_joins_first(config: ClusterConfig) -> bool:
        c = IncidentClusterer(config)
        first = c.add(art("a", ("Teen shot outside Dayton bar", "Total Access")))
        later = c.add(art("b", ("Riverton council approves school budget", "Total Access"), 1))
        return later.incident_id == first.incident_id

    # Scored by their headlines alone, unrelated stories stay apart; the scraped leftover
    # they share would have tied them together.
    assert not second_joins_first(ClusterConfig())
    assert second_joins_first(ClusterConfig(min_body_words=0))


BIO = ("Joel Currier covers courts and crime for the Riverton Post and has reported from "
       "Jefferson County since 2009, after stints covering city hall, schools and the "
       "statehouse in Belleville and Springfield.")


def _blurb_stream(config: ClusterConfig) -> tuple[str, str]:
    c = IncidentClusterer(config)
    shooting = ("Man shot outside Dayton bar",
                "A man was shot in the leg outside a bar on Third Street late Friday, police "
                "said. He was taken to a hospital in stable condition.\n\n" + BIO)
    fire = ("Toddler hurt in Akron apartment fire",
            "A toddler was treated for smoke inhalation after a kitchen fire in an Akron "
            "apartment on Tuesday, firefighters said.\n\n" + BIO)
    first = c.add(art("shooting", shooting))
    later = c.add(art("fire", fire, hours=24 * 10))
    assert c.incident_of("shooting") is None  # gone from the window before the fire
    return first.incident_id, later.incident_id


def test_boilerplate_is_recognised_after_its_first_article_left_the_window():
    # The reporter's blurb came first under an unrelated headline, ten days before: page
    # furniture, not evidence that the fire belongs to the shooting's incident.
    first, later = _blurb_stream(ClusterConfig(window_days=7))
    assert later != first
    # Forgetting paragraphs with their articles, the blurb would tie the two together.
    first, later = _blurb_stream(ClusterConfig(window_days=7, paragraph_memory=0))
    assert later == first


FIRE_3 = (
    "Springfield warehouse fire: cause still unknown, chief Lopez says",
    "Fire chief Maria Lopez said on Wednesday that investigators are still working out what "
    "started Tuesday's fire at the Acme Logistics warehouse on Elm Street in Springfield. "
    "The two workers burned in the blaze remain at Mercy Hospital. Firefighters spent three "
    "hours on the fire, and the warehouse is a total loss, Lopez said.",
)
QUAKE_2 = (
    "Chile quake near Iquique causes no damage, USGS says",
    "The magnitude 6.1 earthquake that struck off northern Chile near Iquique on Wednesday "
    "caused no damage or casualties, the US Geological Survey said. No tsunami warning was "
    "issued for the coast. The quake was centred 40 km deep under the sea.",
)
QUAKE_3 = (
    "No tsunami after magnitude 6.1 earthquake off Iquique, Chile",
    "Authorities in Chile did not issue a tsunami warning after a magnitude 6.1 earthquake "
    "off the coast near Iquique on Wednesday. The US Geological Survey put the quake 40 km "
    "deep. There were no reports of damage or casualties in the northern region.",
)


def test_an_incident_that_drifted_apart_is_split_with_its_duplicates():
    # A join bar so low that everything joins, and a round-up of both stories that makes
    # the quake reports find the fire incident: the two stories end up in one incident.
    c = IncidentClusterer(ClusterConfig(join_threshold=-100.0, split_every=1))
    c.add(art("budget", BUDGET, -1))  # some history, so shared terms count for something
    fires = stream(c, art("fire-1", FIRE_1), art("fire-2", FIRE_2, 1), art("fire-3", FIRE_3, 2),
                   art("round-up", ("News round-up", FIRE_1[1] + " " + QUAKE[1]), 2.5))
    assert fires == ["inc-fire-1"] * 4
    assert c.add(art("quake-1", QUAKE, 3)).incident_id == "inc-fire-1"
    copy = c.add(art("quake-1-copy", QUAKE, 3.5, url="https://syndicated.example/q"))
    assert copy.duplicate_of == "quake-1"
    split = c.add(art("quake-2", QUAKE_2, 4))
    # The round-up went with the quake; the incident's id stays with its first story.
    assert split.incident_id == "inc-quake-2-split"
    assert split.moved == {"round-up": "inc-quake-2-split", "quake-1": "inc-quake-2-split",
                           "quake-1-copy": "inc-quake-2-split"}
    assert split.explanation.detail["split_off"] == 4.0  # the three moved, and this one
    # Its score and shared terms are those of the incident it joined before it left.
    assert split.explanation.moved_from == "inc-fire-1"
    assert split.explanation.split_into == "inc-quake-2-split"  # where the reports went
    assert c.incident_of("fire-3") == "inc-fire-1"
    assert c.incident_of("quake-1-copy") == "inc-quake-2-split"
    # Each half carries on as its own incident.
    assert c.add(art("quake-3", QUAKE_3, 5)).incident_id == "inc-quake-2-split"
    fire_update = ("Acme warehouse fire update", FIRE_3[1] + " " + FIRE_1[1])
    fire_4 = c.add(art("fire-4", fire_update, 6))
    assert fire_4.incident_id == "inc-fire-1"
    assert fire_4.explanation.time_gap_hours == 4.0  # from fire-3, its latest report left


def test_an_explanation_lists_the_shared_names_first_and_not_their_words_again():
    c = IncidentClusterer()
    c.add(art("fire-1", FIRE_1))
    c.add(art("budget", BUDGET, 1))
    joined = c.add(art("fire-2", FIRE_2, 3)).explanation
    # Alphabetically, "40" came first and "springfield" was cut off after twelve.
    assert joined.shared_entities[:4] == ["acme logistics", "elm street", "maria lopez",
                                          "mercy hospital"]
    assert "springfield" in joined.shared_entities
    assert not {"lopez", "maria", "hospital"} & set(joined.shared_entities)


def test_a_report_that_bridges_two_incidents_merges_them_and_names_the_one_merged():
    # A high bar to join keeps the second fire report apart; the report carrying both
    # texts is then sure enough of each incident to merge them.
    c = IncidentClusterer(ClusterConfig(join_threshold=4.0, merge_threshold=2.0))
    assert c.add(art("fire-1", FIRE_1)).incident_id == "inc-fire-1"
    assert c.add(art("fire-2", FIRE_2, 1)).incident_id == "inc-fire-2"
    bridge = c.add(art("fire-3", (FIRE_1[0], FIRE_1[1] + " " + FIRE_2[1]), 2))
    assert (bridge.incident_id, bridge.moved) == ("inc-fire-1", {"fire-2": "inc-fire-1"})
    assert bridge.explanation.decision == "merged"
    assert bridge.explanation.merged_from == ["inc-fire-2"]


LYON_FIRE = (
    "Incendie dans un entrepôt de Vénissieux : deux blessés",
    "Un violent incendie s'est déclaré dans la nuit de lundi à mardi dans un entrepôt de la "
    "zone industrielle de Vénissieux, près de Lyon. Deux employés ont été légèrement blessés "
    "et transportés à l'hôpital. Une centaine de pompiers sont restés sur place pendant "
    "plusieurs heures pour maîtriser les flammes, selon la préfecture du Rhône.",
)
LYON_FIRE_2 = (
    "Vénissieux : un entrepôt ravagé par les flammes, deux employés blessés",
    "Les pompiers du Rhône ont lutté toute la nuit contre l'incendie d'un entrepôt de la zone "
    "industrielle de Vénissieux. Deux employés, légèrement blessés, ont été transportés à "
    "l'hôpital. La préfecture indique que les causes de l'incendie ne sont pas encore connues.",
)
PENSIONS = (
    "Le gouvernement présente son projet de loi sur les retraites",
    "Le gouvernement a présenté mercredi en conseil des ministres son projet de loi sur la "
    "réforme des retraites. Le texte prévoit un relèvement progressif de l'âge légal de "
    "départ. Les syndicats ont annoncé une journée de mobilisation pour la semaine prochaine, "
    "selon un communiqué.",
)
FOOTBALL = (
    "Football : le PSG s'impose face à Marseille",
    "Le Paris Saint-Germain s'est imposé dimanche soir face à l'Olympique de Marseille dans le "
    "classique du championnat de France. Les Parisiens ont marqué deux buts en seconde "
    "période. L'entraîneur a salué une victoire importante pour la suite de la saison, selon "
    "les journalistes présents sur place.",
)


def test_french_reports_join_on_their_story_not_on_french_function_words():
    # Before, "de", "les", "une", "ont" were rare words in the stream: the pension reform
    # and the football match joined the warehouse fire.
    c = IncidentClusterer()
    assert stream(c, art("fire", LYON_FIRE), art("pensions", PENSIONS, 1),
                  art("football", FOOTBALL, 2), art("fire-2", LYON_FIRE_2, 3)) == [
        "inc-fire", "inc-pensions", "inc-football", "inc-fire"]
    joined = c.add(art("fire-3", (LYON_FIRE[0], LYON_FIRE[1] + " " + LYON_FIRE_2[1]), 4))
    assert "incendi" in joined.explanation.shared_terms
    assert not {"de", "les", "la", "une", "ont", "dans"} & set(joined.explanation.shared_terms)


def test_taking_an_original_out_keeps_a_term_a_remaining_member_brought_back():
    nothing = _Facts(frozenset(), frozenset(), frozenset(), frozenset(), None)
    inc = _Incident("inc-a", 1)
    leaving = {"tsunami": 0.2, **{f"filler{i}": 1.0 for i in range(10)}}
    inc.add_original(leaving, {})
    _compact(inc, 10)  # drops "tsunami", the lightest term
    inc.add_original({"tsunami": 0.9, "quake": 1.0}, {})
    inc.remove_original(leaving, {}, nothing)
    assert inc.centroid["tsunami"] > 0 and inc.presence["tsunami"] == 1
    assert "filler0" not in inc.centroid and inc.originals == 1


def test_an_incident_counts_the_languages_its_originals_were_told_in():
    # (A split takes an original's facts out again: its language goes when none is left.)
    german = _Facts(frozenset(), frozenset(), frozenset(), frozenset(), "German")
    untold = _Facts(frozenset(), frozenset(), frozenset(), frozenset(), None)
    inc = _Incident("inc-a", 1)
    for facts in (german, german, untold):
        inc.count_facts(facts, 1)
    assert inc.languages == {"German": 2}
    inc.count_facts(german, -1)
    inc.count_facts(german, -1)
    assert inc.languages == {}


def test_an_incident_of_one_story_is_not_split():
    c = IncidentClusterer(ClusterConfig(split_every=1))
    c.add(art("budget", BUDGET, -1))
    ids = stream(c, art("fire-1", FIRE_1), art("fire-2", FIRE_2, 1), art("fire-3", FIRE_3, 2),
                 art("fire-4", (FIRE_1[0], FIRE_2[1] + " " + FIRE_3[1]), 3),
                 art("fire-5", (FIRE_3[0], FIRE_1[1] + " " + FIRE_2[1]), 4),
                 art("fire-6", (FIRE_2[0], FIRE_3[1] + " " + FIRE_1[1]), 5))
    assert ids == ["inc-fire-1"] * 6


def test_a_long_dormant_incident_gives_way_to_a_live_one_in_the_candidate_lookup():
    cl = IncidentClusterer(ClusterConfig(max_candidates=1))
    now = T0.timestamp()
    old = _Incident("inc-old", seq=1, first_ts=now - 101 * 86_400, last_ts=now - 100 * 86_400)
    live = _Incident("inc-live", seq=2, first_ts=now - 86_400, last_ts=now - 86_400)
    cl._incidents.update({"inc-old": old, "inc-live": live})
    cl._dormant["inc-old"] = old.last_ts  # dormant since its last report
    cl._postings.update({"mayfair": {"inc-old"}, "kessler": {"inc-live"}})
    vec = {"mayfair": 0.6, "kessler": 0.5}
    # Idle 100 days: 0.6 / (1 + 0.3 * log1p(100)) = 0.25 < 0.5, so the live incident ranks first.
    assert cl._candidates(vec, frozenset(), now) == ["inc-live"]
    # Without the article's time (or the decay) the lookup weights alone decide.
    assert cl._candidates(vec, frozenset()) == ["inc-old"]


FED_HEADLINES = (
    "Fed raises interest rates by a quarter point", "Federal Reserve lifts rates a quarter point",
    "Fed hikes interest rates, signals more to come", "Stocks fall after Fed raises interest rates",
    "Federal Reserve raises benchmark rate", "Fed rate hike: what it means for your mortgage",
    "Yellen: Fed raises rates as economy strengthens", "Fed lifts interest rates for second time",
    "Markets react to Federal Reserve rate hike", "Fed raises rates, sees three more hikes",
    "Mortgage rates climb after Fed hike", "Dollar jumps as Fed raises interest rates")


@pytest.mark.parametrize("body", ["", "Click here to read the full story."])
def test_headlines_with_a_leftover_line_for_a_body_split_as_headlines(body):
    # Scored by their headlines alone, they must also be split by the headline bar: with
    # the full-text bar their few shared words look like two stories drifting apart.
    c = IncidentClusterer()
    for i, headline in enumerate(FED_HEADLINES):
        c.add(Article(id=f"fed-{i}", title=headline, text=body,
                      published=T0 + timedelta(hours=i)))
    assert {c.incident_of(f"fed-{i}") for i in range(len(FED_HEADLINES))} == {"inc-fed-0"}


def test_one_word_is_no_evidence_of_a_story():
    # Pages whose scraped headline was the page's language code, with no body: each had a
    # cosine of 1 with every other, and ten unrelated ones formed one incident.
    c = IncidentClusterer()
    junk = [c.add(art(f"junk-{n}", ("en", ""), n)) for n in range(3)]
    assert len({d.incident_id for d in junk}) == 3
    assert junk[1].explanation.decision == "new"
    assert junk[1].explanation.detail == {"scoring_terms": 1.0}
    # Two terms are enough to compare (and the rule does not stop them).
    pair = stream(c, art("h-1", ("Acme blaze", ""), 5), art("h-2", ("Blaze at Acme", ""), 6))
    assert pair[0] == pair[1]


# One event reported in German and in English: two names (Gabriel Boric, Valparaíso) and a
# number (14) in common, besides a few words.
BORIC_DE = (
    "Erdbeben in Chile: Präsident Gabriel Boric besucht Valparaíso",
    "Nach dem schweren Erdbeben an der Küste ist Präsident Gabriel Boric am Mittwoch in die "
    "Hafenstadt Valparaíso gereist. Nach Angaben der Behörden wurden mindestens 14 Menschen "
    "getötet. Die Rettungsarbeiten sollen auch in der Nacht weitergehen, und viele Häuser sind "
    "nicht mehr bewohnbar.",
)
BORIC_EN = (
    "Boric visits Valparaíso as quake death toll rises to 14",
    "President Gabriel Boric travelled on Wednesday to the port city of Valparaíso after the "
    "earthquake that struck the coast. At least 14 people were killed, and officials said that "
    "rescue work would go on through the night. Many homes have been left uninhabitable.",
)
# Two stories that have only Elon Musk in common.
MUSK_DE = (
    "Tesla: Elon Musk kündigt neues Werk in Mexiko an",
    "Der Autohersteller will nach Angaben von Elon Musk bei Monterrey eine weitere Fabrik bauen. "
    "Dort sollen günstigere Modelle für den amerikanischen Markt entstehen, sagte der Chef.",
)
MUSK_EN = (
    "Elon Musk mocked over rocket explosion",
    "The SpaceX founder was mocked online after the rocket exploded minutes after lift-off, and "
    "critics said that the company had been warned.",
)


def test_reports_in_two_languages_join_on_two_shared_names():
    c = IncidentClusterer()
    assert stream(c, art("boric-de", BORIC_DE), art("boric-en", BORIC_EN, 1)) == [
        "inc-boric-de", "inc-boric-de"]


def test_reports_in_two_languages_do_not_join_on_one_shared_name():
    # Across languages only names, numbers and a few loan words carry over: one of them is
    # weak evidence ("Trump diz que tem um botão nuclear" joined a Guardian report on the
    # Trump-Russia inquiry on "Donald Trump"). Without the rule these two join.
    apart = IncidentClusterer(ClusterConfig(cross_language_names=0))
    assert stream(apart, art("musk-de", MUSK_DE), art("musk-en", MUSK_EN, 1)) == [
        "inc-musk-de", "inc-musk-de"]
    c = IncidentClusterer()
    c.add(art("musk-de", MUSK_DE))
    decision = c.add(art("musk-en", MUSK_EN, 1))
    assert decision.incident_id == "inc-musk-en"
    why = decision.explanation
    # It would have joined: the explanation says on what, and why not.
    assert why.decision == "new" and why.score >= why.threshold
    assert why.shared_entities == ["musk"] and why.detail["other_language_names"] == 1.0


def test_unrelated_short_summaries_declared_portuguese_do_not_join_on_its_function_words():
    # jn.pt's feed (pt-pt), summaries only: a bus crash in Peru, a crash on the A1 and
    # tobacco smuggling joined on "com", "de", "um", "na", rare words in an English stream.
    c = IncidentClusterer()
    bus, power = (replace(art(name, doc, hours), language="pt-pt")
                  for name, doc, hours in (("bus", BUS_CRASH, 0), ("power", POWER_PRICE, 1)))
    assert stream(c, bus, power) == ["inc-bus", "inc-power"]
