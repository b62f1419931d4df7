"""Seeded, deterministic synthetic e-commerce logs with planted structure a model can learn.

``generate`` writes the project's canonical raw format (JSON lines, UTF-8, one object a line)::

    <out>/events/dt=YYYY-MM-DD/part-NNNNN.jsonl    behaviour events (view, cart, ... search, fav)
    <out>/reviews/dt=YYYY-MM-DD/part-NNNNN.jsonl   product reviews (English and Chinese)
    <out>/_truth/users.jsonl                       the latent traits planted in every user
    <out>/_truth/items.jsonl                       the catalog, with each item's latent quality
    <out>/_truth/summary.json                      counts (also returned by ``generate``)

The ``dt=`` folder is the UTC date of the record's ``timestamp``. ``NNNNN`` is the number of a fixed
chunk of users (``chunk_users`` users each, independent of ``workers``); each chunk writes its own
part file per day, so the same arguments give byte-identical files for any number of workers.

Planted structure (what a model should be able to recover):

* **Catalog.** 20 categories (readable names such as ``electronics``) x ``items_per_category``
  items. Every item has a brand (5% have none), a log-normal price around a category-specific
  level, a popularity weight and a latent quality (brand effect + item noise) that only reviews see.
* **Users.** Each user belongs to one of five segment archetypes with their own trait distributions:
  ``loyal_high_spender`` (active, high purchase propensity, little price sensitivity, brand loyal),
  ``bargain_hunter`` (long sessions, many searches, strongly prefers cheap items),
  ``casual_browser`` (rare short sessions, rarely buys), ``churning`` (active at first, activity
  fades exponentially over a few days) and ``new_user`` (first seen part-way through the period).
  Every user has latent category preferences drawn from a sparse Dirichlet, a Beta purchase
  propensity, a price sensitivity, an activity level (sessions a day), a favourite brand in their
  top categories, a replenishment cycle, a review propensity, a mood (shifts ratings) and a
  language (about 30% write and search in Chinese).
* **Sessions.** Session starts follow a non-homogeneous Poisson process (a daily rhythm in UTC,
  busier weekends, the churn decay); a new session starts at least 30 minutes after the previous one
  ends, while events inside a session are seconds to minutes apart (always < 25 minutes), so a
  30-minute inactivity rule recovers ``session_id`` exactly. A session has a mission category drawn
  from the preferences (90%) or at random (10%), may open with a search naming the category's
  product or a brand, then views items (chosen by popularity, by price relative to the category
  level weighted by the user's sensitivity, and by brand loyalty), with occasional fav, cart and
  remove_from_cart. Returning users first rebuy due consumables and check out pending carts.
* **Purchases.** Cart probability and checkout probability grow with the purchase propensity, so
  purchases concentrate on preferred categories and high-propensity users buy more. Items left in a
  cart stay *pending* for up to five days: a pending cart makes the user return sooner and a
  returning high-propensity user usually checks it out first. Consumables (beauty, health, baby,
  grocery, pet) run out after a per-user replenishment cycle of 5 to 9 days: the user then returns
  sooner and usually buys the same item again. Hence whether a user purchases in a given week is
  predictable from earlier behaviour (recent carts, past consumable purchases, propensity shown by
  the cart rate, fading activity of churners); only new users are cold starts.
* **Reviews.** Some purchases get a review 1 to about 10 days later (reviews that would fall after
  the period are not written). The rating is item quality + user mood + noise, cut into 1..5 stars;
  ``label`` is 1 for 4-5 stars, 0 for 1-2 and null for 3. Title and text are assembled from phrase
  templates whose sentiment follows the rating, with mixed sentences (a mild complaint in a good
  review, a small praise in a bad one, negations such as "not great" / "不算差") and many product
  nouns and aspects, so a classifier can learn the sentiment but no single token gives it away.
"""
from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import math
import multiprocessing
import random
import shutil
import time
from bisect import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase", "search", "fav")
SEGMENTS = ("loyal_high_spender", "bargain_hunter", "casual_browser", "churning", "new_user")
LANGUAGES = ("en", "zh")
CHUNK_USERS = 2000
"""Users per chunk (one part file per chunk and day); fixed so output does not depend on workers."""

_DAY_S = 86_400
_SESSION_GAP_S = 1800  # the 30-minute inactivity rule sessionization uses
_MAX_INNER_GAP_S = 1500  # inside a session events are always closer than the rule
_PENDING_TTL_S = 5 * _DAY_S  # an unbought cart is abandoned after five days
_FLUSH_LINES = 50_000  # buffered lines per chunk before they are appended to their part files
_PILOT_USERS = 2000  # users simulated to size the population for an events target
_OWNED_DIRS = ("events", "reviews", "_truth")


# ---- catalog vocabulary -------------------------------------------------------------------------
@dataclass(frozen=True)
class _CategorySpec:
    name: str
    zh: str
    nouns_en: tuple[str, ...]
    nouns_zh: tuple[str, ...]
    brands: tuple[str, ...]
    median_price: float
    price_sigma: float = 0.6
    consumable: bool = False


_CATEGORIES: tuple[_CategorySpec, ...] = (
    _CategorySpec("electronics", "电子产品",
                  ("headphones", "bluetooth speaker", "power bank", "smartwatch", "earbuds"),
                  ("耳机", "蓝牙音箱", "充电宝", "智能手表", "无线耳机"),
                  ("Voltix", "Auralink", "Sonora", "Kiwa", "Brightcore", "Nexon"), 80.0, 0.7),
    _CategorySpec("phones", "手机通讯",
                  ("phone", "phone case", "screen protector", "charging cable", "wireless charger"),
                  ("手机", "手机壳", "钢化膜", "数据线", "无线充电器"),
                  ("Lumio", "Orbit", "Zephyr", "Pomelo", "Tengu"), 45.0, 1.1),
    _CategorySpec("computers", "电脑办公",
                  ("laptop", "keyboard", "mouse", "monitor", "webcam"),
                  ("笔记本电脑", "键盘", "鼠标", "显示器", "摄像头"),
                  ("Keystone", "Pixelo", "Arcwave", "Datum", "Quanta"), 150.0, 1.0),
    _CategorySpec("home_appliances", "家用电器",
                  ("blender", "vacuum cleaner", "kettle", "air fryer", "desk fan"),
                  ("料理机", "吸尘器", "电水壶", "空气炸锅", "电风扇"),
                  ("Homely", "Breezo", "Cuisina", "Duxa", "Vortek"), 90.0),
    _CategorySpec("kitchen", "厨房用品",
                  ("frying pan", "knife set", "cutting board", "mug", "food container"),
                  ("平底锅", "刀具套装", "砧板", "马克杯", "保鲜盒"),
                  ("Chefra", "Ironleaf", "Panora", "Mizu", "Copperly"), 25.0),
    _CategorySpec("furniture", "家具",
                  ("office chair", "desk", "bookshelf", "floor lamp", "sofa cushion"),
                  ("办公椅", "书桌", "书架", "落地灯", "沙发靠垫"),
                  ("Nordhus", "Oakwell", "Loftly", "Sitra", "Woodmark"), 120.0, 0.8),
    _CategorySpec("womens_clothing", "女装",
                  ("dress", "blouse", "skirt", "coat", "cardigan"),
                  ("连衣裙", "衬衫", "半身裙", "大衣", "开衫"),
                  ("Mireille", "Lunaco", "Velvetta", "Sorabi", "Petalina"), 40.0),
    _CategorySpec("mens_clothing", "男装",
                  ("shirt", "jacket", "jeans", "sweater", "hoodie"),
                  ("衬衫", "夹克", "牛仔裤", "毛衣", "卫衣"),
                  ("Denholm", "Ridgeway", "Urbano", "Stackhouse", "Brio"), 45.0),
    _CategorySpec("shoes", "鞋靴",
                  ("sneakers", "boots", "sandals", "running shoes", "slippers"),
                  ("运动鞋", "靴子", "凉鞋", "跑鞋", "拖鞋"),
                  ("Stridex", "Kofu", "Trailo", "Paceline", "Solemate"), 60.0),
    _CategorySpec("beauty", "美妆护肤",
                  ("lipstick", "face cream", "serum", "perfume", "sunscreen"),
                  ("口红", "面霜", "精华液", "香水", "防晒霜"),
                  ("Belrose", "Glowa", "Purelle", "Misaki", "Dewdrop"), 30.0, 0.7, True),
    _CategorySpec("health", "营养保健",
                  ("vitamins", "protein powder", "thermometer", "massage gun", "fish oil"),
                  ("维生素", "蛋白粉", "体温计", "筋膜枪", "鱼油"),
                  ("Vitara", "Wellspring", "Nutrio", "Healix", "Corevia"), 25.0, 0.7, True),
    _CategorySpec("sports", "运动健身",
                  ("yoga mat", "dumbbells", "tennis racket", "bike helmet", "jump rope"),
                  ("瑜伽垫", "哑铃", "网球拍", "骑行头盔", "跳绳"),
                  ("Athlex", "Peakform", "Fitora", "Rallyo", "Sprintz"), 35.0),
    _CategorySpec("outdoors", "户外",
                  ("tent", "sleeping bag", "hiking backpack", "trekking poles", "camping stove"),
                  ("帐篷", "睡袋", "登山包", "登山杖", "露营炉"),
                  ("Summitra", "Wildpine", "Northtrail", "Campo", "Ridgeback"), 70.0),
    _CategorySpec("toys", "玩具",
                  ("building blocks", "doll", "jigsaw puzzle", "toy car", "board game"),
                  ("积木", "玩偶", "拼图", "玩具车", "桌游"),
                  ("Playbox", "Tinytown", "Kiddo", "Brickly", "Funloop"), 25.0),
    _CategorySpec("baby", "母婴",
                  ("diapers", "stroller", "baby bottle", "onesie", "baby wipes"),
                  ("纸尿裤", "婴儿车", "奶瓶", "连体衣", "湿巾"),
                  ("Cuddle", "Littlebee", "Nestling", "Babiva", "Softie"), 30.0, 0.8, True),
    _CategorySpec("books", "图书",
                  ("novel", "cookbook", "picture book", "textbook", "biography"),
                  ("小说", "菜谱", "绘本", "教材", "传记"),
                  ("Inkwell Press", "Lantern Books", "Paperkite", "Folio House", "Quillmark"),
                  15.0, 0.4),
    _CategorySpec("grocery", "食品饮料",
                  ("coffee beans", "green tea", "snack box", "olive oil", "instant noodles"),
                  ("咖啡豆", "绿茶", "零食礼包", "橄榄油", "方便面"),
                  ("Farmgate", "Goldleaf", "Hearthly", "Mornbrew", "Sunorchard"), 12.0, 0.5, True),
    _CategorySpec("pet", "宠物用品",
                  ("dog food", "cat litter", "pet bed", "leash", "cat tree"),
                  ("狗粮", "猫砂", "宠物窝", "牵引绳", "猫爬架"),
                  ("Pawsome", "Whiskerly", "Petvia", "Barkley", "Tailwag"), 25.0, 0.6, True),
    _CategorySpec("automotive", "汽车用品",
                  ("dash cam", "tire inflator", "car charger", "seat cover", "phone mount"),
                  ("行车记录仪", "充气泵", "车载充电器", "座椅套", "手机支架"),
                  ("Autora", "Drivex", "Roadmate", "Gearon", "Torqa"), 40.0),
    _CategorySpec("stationery", "文具",
                  ("pen set", "notebook", "desk organizer", "school backpack", "highlighters"),
                  ("钢笔套装", "笔记本", "桌面收纳盒", "书包", "荧光笔"),
                  ("Scribo", "Papyra", "Inkly", "Notewell", "Deskly"), 10.0),
)
CATEGORY_NAMES = tuple(c.name for c in _CATEGORIES)

# Share of session starts by UTC hour (peak 1.0): quiet nights, busy evenings.
_HOURLY = (0.25, 0.15, 0.10, 0.08, 0.08, 0.10, 0.20, 0.35, 0.50, 0.60, 0.65, 0.70,
           0.75, 0.70, 0.65, 0.65, 0.70, 0.80, 0.90, 1.00, 1.00, 0.95, 0.75, 0.45)
_WEEKEND_BOOST = 1.25

# ---- review phrase pools ------------------------------------------------------------------------
# Levels: 0 strong negative, 1 mild negative, 2 neutral, 3 mild positive, 4 strong positive.
# Mild levels deliberately reuse words of the other polarity ("not bad", "expected it to be great").
_EN_SENT: tuple[tuple[str, ...], ...] = (
    ("Terrible {noun}, it broke on the first day.", "Complete waste of money.",
     "Worst purchase I have made this year.", "Do not buy this, it is total junk.",
     "I returned it immediately.", "Customer service never replied to my complaint.",
     "The {aspect} is {neg_adj} and it feels like a cheap copy.",
     "Absolutely awful, {brand} should be ashamed.", "It arrived damaged and smelled strange.",
     "Stopped working after two days, very angry.", "Nothing like the description, a scam.",
     "I regret buying this {noun}.", "Zero stars if I could.",
     "Cheaply made and dangerous to use.", "Never again, avoid {brand}."),
    ("A bit disappointed with this {noun}.", "Quality is not what I expected.",
     "Not worth the money.", "It stopped working properly after a week.",
     "Smaller than the pictures suggest.", "The {aspect} is rather {neg_adj}.",
     "I expected it to be great, but it is not.", "Not as good as my old one.",
     "Looks nice but the {aspect} is {neg_adj}.", "Shipping was fast, the product less so.",
     "The instructions were confusing and parts were missing.",
     "It does the job, barely.", "Overpriced for what you get.",
     "Had high hopes for {brand}, a letdown."),
    ("It is okay, nothing special.", "Average {noun}, works as described.",
     "Some things I like, some I do not.", "Not bad, not great.",
     "Fine for the price, I guess.", "The {aspect} is acceptable.",
     "Neither impressed nor disappointed.", "It is a normal {noun}, as expected.",
     "Good {aspect} but poor {aspect2}.", "Mixed feelings about this one.",
     "Does what it says, nothing more."),
    ("Pretty good {noun} overall.", "Does the job well.", "Solid build, happy with it.",
     "Good value, a few minor quirks.", "Nice {noun}, although shipping was a bit slow.",
     "Not bad at all for the price.", "The {aspect} is {pos_adj}, the {aspect2} could be better.",
     "I was worried it would be bad, but it is fine.", "Works as expected, no problems so far.",
     "A reliable {noun} from {brand}.", "Satisfied, would consider buying again.",
     "Better than I expected for this price."),
    ("Absolutely love this {noun}!", "This {noun} exceeded my expectations.",
     "Best {noun} I have bought in years.", "Excellent quality, works perfectly.",
     "Highly recommend {brand} to anyone.", "Fantastic value for the price.",
     "Would definitely buy again.", "Five stars, no complaints at all.",
     "The {aspect} is {pos_adj} and it looks gorgeous.", "My whole family is delighted with it.",
     "Perfect gift, she loved it.", "Outstanding, worth every penny.",
     "Impressed by the {aspect}, simply {pos_adj}.", "Flawless from day one."),
)
_EN_FILLER = ("I bought this {noun} for my {person}.", "Ordered it on a {when}.",
              "I use it almost every day.", "This is my second {noun} from {brand}.",
              "Delivery took {n} days.", "I compared several {noun}s before choosing this one.",
              "The package arrived on time.", "I have had it for about {n} weeks now.")
_EN_TITLES: tuple[tuple[str, ...], ...] = (
    ("Terrible", "Waste of money", "Avoid", "Broken on arrival", "Very bad {noun}"),
    ("Disappointed", "Not worth it", "Could be better", "Meh {noun}", "Expected more"),
    ("It's okay", "Average", "Mixed feelings", "Decent {noun}", "As described"),
    ("Good {noun}", "Pretty good", "Solid choice", "Happy with it", "Nice"),
    ("Love it", "Great {noun}", "Highly recommended", "Worth every penny", "Excellent"),
)
_EN_ASPECTS = ("quality", "design", "packaging", "material", "size", "color", "finish",
               "build", "comfort", "battery", "smell", "texture")
_EN_POS_ADJ = ("excellent", "superb", "impressive", "lovely", "solid", "outstanding", "sturdy",
               "great", "wonderful", "premium")
_EN_NEG_ADJ = ("poor", "flimsy", "disappointing", "awful", "mediocre", "cheap", "terrible",
               "rough", "bad", "fragile")
_EN_PERSONS = ("wife", "husband", "son", "daughter", "mother", "father", "friend", "office",
               "sister", "brother")
_EN_WHEN = ("weekend", "Monday", "whim", "holiday sale", "friend's recommendation", "late night")

_ZH_SENT: tuple[tuple[str, ...], ...] = (
    ("太差了，{noun}第一天就坏了。", "完全是浪费钱。", "千万别买！", "垃圾产品，已经退货了。",
     "客服态度很差，一直不回复。", "{aspect}{adv}{neg_adj}，像是假货。", "{brand}太让人失望了。",
     "收到就是坏的，还有异味。", "用了两天就不能用了，非常生气。", "和描述完全不符，骗人的。",
     "后悔买了这个{noun}。", "做工粗糙，用着不安全。", "再也不买{brand}了。"),
    ("有点失望。", "质量不如预期。", "不太值这个价。", "用了一周就出问题了。",
     "颜色和图片不太一样。", "{aspect}有点{neg_adj}。", "本来以为会很好，结果一般。",
     "没有之前那个好用。", "外观还行，就是{aspect}{neg_adj}。", "物流很快，但东西不怎么样。",
     "说明书看不懂，还少了配件。", "勉强能用吧。", "价格偏贵，不划算。"),
    ("一般般吧，没什么特别的。", "和描述基本一致。", "中规中矩。", "价格还可以，质量一般。",
     "不好也不坏。", "{aspect}还过得去。", "没有惊喜也没有失望。", "就是普通的{noun}。",
     "{aspect}不错，{aspect2}一般。", "心情比较复杂。"),
    ("整体还不错。", "{noun}挺好的，就是物流有点慢。", "性价比可以。", "用着还行，比较满意。",
     "不算差，还挺满意的。", "{aspect}{adv}{pos_adj}，{aspect2}还有提升空间。",
     "本来担心质量不好，结果还可以。", "目前用着没发现问题。", "{brand}的{noun}比较靠谱。",
     "满意，以后可能还会回购。", "比预期的要好一些。"),
    ("这个{noun}太好用了！", "质量非常好，超出预期。", "物超所值，强烈推荐。",
     "{brand}的东西果然靠谱。", "已经回购了，全家都很喜欢。", "做工精细，包装也很用心。",
     "{aspect}{adv}{pos_adj}，颜值也高。", "五星好评，没有任何问题。", "送人的，朋友特别喜欢。",
     "完美，每一分钱都花得值。", "用了很久了，一直很好用。", "买过最好的{noun}。"),
)
_ZH_FILLER = ("给{person}买的{noun}。", "趁{when}下的单。", "几乎每天都在用。",
              "这是第二次买{brand}的{noun}了。", "快递{n}天就到了。", "对比了好几家才选的这个。",
              "包装完好，按时送达。", "用了大概{n}周了。")
_ZH_TITLES: tuple[tuple[str, ...], ...] = (
    ("太差了", "浪费钱", "别买", "差评", "到手就坏"),
    ("有点失望", "不值", "一般偏下", "不太满意", "期望太高"),
    ("还行", "一般", "中规中矩", "凑合", "和描述一致"),
    ("不错", "挺好", "满意", "值得购买", "还可以"),
    ("非常喜欢", "强烈推荐", "物超所值", "五星好评", "超级好用"),
)
_ZH_ASPECTS = ("质量", "做工", "外观", "包装", "手感", "颜色", "尺寸", "材质", "味道", "续航")
_ZH_ADV = ("非常", "很", "特别", "挺", "真的", "相当")
_ZH_POS_ADJ = ("好", "不错", "出色", "精致", "舒服", "结实", "漂亮")
_ZH_NEG_ADJ = ("差", "粗糙", "糟糕", "一般", "廉价", "劣质", "难看")
_ZH_PERSONS = ("老婆", "老公", "儿子", "女儿", "妈妈", "爸爸", "朋友", "同事")
_ZH_WHEN = ("周末", "双十一", "活动", "半夜", "朋友推荐")

# Sentence level mix per star rating (index = level above); text follows the rating, noisily.
_LEVEL_MIX = {
    1: (0.60, 0.30, 0.05, 0.05, 0.00),
    2: (0.25, 0.50, 0.15, 0.10, 0.00),
    3: (0.00, 0.25, 0.50, 0.25, 0.00),
    4: (0.00, 0.10, 0.15, 0.50, 0.25),
    5: (0.00, 0.05, 0.05, 0.30, 0.60),
}
_LEVEL_CUM = {k: tuple(sum(v[: i + 1]) for i in range(5)) for k, v in _LEVEL_MIX.items()}


# ---- catalog ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    item_id: str
    cat: int
    brand: str | None
    price: float
    quality: float
    popularity: float
    log_rel_price: float  # log(price / category median): what price sensitivity acts on
    json_fragment: str  # '"item_id":...,"category":...,"brand":...,"price":...' pre-encoded


@functools.lru_cache(maxsize=8)
def _catalog(seed: int, items_per_category: int) -> tuple[tuple[_Item, ...], ...]:
    """The items of every category, a pure function of (seed, items_per_category)."""
    r = random.Random(f"{seed}-catalog")
    out = []
    for ci, spec in enumerate(_CATEGORIES):
        brand_quality = {b: r.gauss(0.0, 0.45) for b in spec.brands}
        mu = math.log(spec.median_price)
        items = []
        for k in range(items_per_category):
            brand = None if r.random() < 0.05 else r.choice(spec.brands)
            price = round(max(0.5, math.exp(r.gauss(mu, spec.price_sigma))), 2)
            quality = 0.35 + (brand_quality[brand] if brand else -0.2) + r.gauss(0.0, 0.6)
            item_id = f"i{ci:02d}{k:05d}"
            fragment = (f'"item_id":"{item_id}","category":"{spec.name}",'
                        f'"brand":{json.dumps(brand)},"price":{price:.2f}')
            items.append(_Item(item_id, ci, brand, price, round(quality, 4),
                               r.lognormvariate(0.0, 1.0), math.log(price) - mu, fragment))
        out.append(tuple(items))
    return tuple(out)


# ---- users --------------------------------------------------------------------------------------
_SEGMENT_WEIGHTS = (0.15, 0.25, 0.35, 0.15, 0.10)


@dataclass
class _User:
    idx: int
    user_id: str
    segment: str
    prefs: list[float]
    propensity: float
    price_sensitivity: float
    activity: float  # mean sessions a day at the daily peak, before churn decay
    start_s: float
    churn_tau_s: float | None
    views_mean: float
    search_p: float
    fav_brand: dict[int, str]
    review_propensity: float
    mood: float
    language: str
    replenish_s: float  # how long a bought consumable lasts before the user needs it again


def _draw_user(r: random.Random, idx: int, id_width: int, period_s: int) -> _User:
    seg = r.choices(SEGMENTS, weights=_SEGMENT_WEIGHTS)[0]
    gammas = [r.gammavariate(0.25, 1.0) + 1e-12 for _ in _CATEGORIES]
    total = sum(gammas)
    prefs = [g / total for g in gammas]
    start_s, tau = 0.0, None
    if seg == "loyal_high_spender":
        prop, sens, act, views, search = (r.betavariate(6, 3), r.uniform(-0.6, 0.1),
                                          r.uniform(1.0, 2.0), 4.0, 0.15)
    elif seg == "bargain_hunter":
        prop, sens, act, views, search = (r.betavariate(3, 6), r.uniform(1.2, 2.5),
                                          r.uniform(0.6, 1.3), 7.0, 0.40)
    elif seg == "casual_browser":
        prop, sens, act, views, search = (r.betavariate(1.2, 10), r.uniform(0.3, 1.2),
                                          r.uniform(0.15, 0.6), 3.0, 0.10)
    elif seg == "churning":
        prop, sens, act, views, search = (r.betavariate(2, 5), r.uniform(0.3, 1.2),
                                          r.uniform(2.0, 3.5), 4.0, 0.15)
        tau = r.uniform(1.5, 4.5) * _DAY_S
    else:  # new_user
        prop, sens, act, views, search = (r.betavariate(2, 4), r.uniform(0.3, 1.2),
                                          r.uniform(0.6, 1.5), 4.0, 0.20)
        start_s = r.uniform(0.25, 0.75) * period_s
    ranked = sorted(range(len(prefs)), key=lambda c: -prefs[c])
    fav_brand = {c: r.choice(_CATEGORIES[c].brands) for c in ranked[:3]}
    return _User(
        idx=idx, user_id=f"u{idx:0{id_width}d}", segment=seg, prefs=prefs, propensity=prop,
        price_sensitivity=sens, activity=act, start_s=start_s, churn_tau_s=tau, views_mean=views,
        search_p=search, fav_brand=fav_brand, review_propensity=r.betavariate(3, 4),
        mood=r.gauss(0.0, 0.5), language="zh" if r.random() < 0.3 else "en",
        replenish_s=r.uniform(5.0, 9.0) * _DAY_S,
    )


def _truth_line(u: _User) -> str:
    ranked = sorted(range(len(u.prefs)), key=lambda c: -u.prefs[c])[:5]
    return json.dumps({
        "user_id": u.user_id,
        "segment": u.segment,
        "top_categories": [{"category": CATEGORY_NAMES[c], "weight": round(u.prefs[c], 4)}
                           for c in ranked],
        "purchase_propensity": round(u.propensity, 4),
        "price_sensitivity": round(u.price_sensitivity, 4),
        "activity_sessions_per_day": round(u.activity, 4),
        "start_offset_days": round(u.start_s / _DAY_S, 4),
        "churn_tau_days": None if u.churn_tau_s is None else round(u.churn_tau_s / _DAY_S, 4),
        "favourite_brands": {CATEGORY_NAMES[c]: b for c, b in u.fav_brand.items()},
        "review_propensity": round(u.review_propensity, 4),
        "mood": round(u.mood, 4),
        "language": u.language,
        "replenish_cycle_days": round(u.replenish_s / _DAY_S, 4),
    }, ensure_ascii=False, separators=(",", ":")) + "\n"


# ---- review text --------------------------------------------------------------------------------
def _level(r: random.Random, rating: int) -> int:
    x, cum = r.random(), _LEVEL_CUM[rating]
    for level, c in enumerate(cum):
        if x < c:
            return level
    return 4


def _review_text(r: random.Random, rating: int, language: str, cat: int,
                 brand: str | None) -> tuple[str, str]:
    """A (title, text) pair whose sentiment follows ``rating``, from the language's phrase pools."""
    spec = _CATEGORIES[cat]
    zh = language == "zh"
    sent, filler, titles = (_ZH_SENT, _ZH_FILLER, _ZH_TITLES) if zh else (
        _EN_SENT, _EN_FILLER, _EN_TITLES)
    aspects = _ZH_ASPECTS if zh else _EN_ASPECTS
    fill = {
        "noun": r.choice(spec.nouns_zh if zh else spec.nouns_en),
        "brand": brand or ("这个牌子" if zh else "this brand"),
        "aspect": r.choice(aspects), "aspect2": r.choice(aspects),
        "pos_adj": r.choice(_ZH_POS_ADJ if zh else _EN_POS_ADJ),
        "neg_adj": r.choice(_ZH_NEG_ADJ if zh else _EN_NEG_ADJ),
        "adv": r.choice(_ZH_ADV), "person": r.choice(_ZH_PERSONS if zh else _EN_PERSONS),
        "when": r.choice(_ZH_WHEN if zh else _EN_WHEN), "n": r.randint(2, 9),
    }
    parts: list[str] = []
    for _ in range(r.choice((1, 2, 2, 3, 3, 4))):
        sentence = r.choice(sent[_level(r, rating)]).format(**fill)
        if sentence not in parts:
            parts.append(sentence)
    if r.random() < 0.5:
        parts.insert(r.randint(0, len(parts)), r.choice(filler).format(**fill))
    title = r.choice(titles[_level(r, rating)]).format(**fill)
    return title, ("" if zh else " ").join(parts)


def _rating(r: random.Random, quality: float, mood: float) -> int:
    score = quality + mood + r.gauss(0.0, 0.6)
    for stars, cut in ((1, -0.9), (2, -0.3), (3, 0.2), (4, 0.9)):
        if score < cut:
            return stars
    return 5


# ---- simulation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    """Everything a worker needs, picklable: the same context gives the same bytes anywhere."""

    seed: int
    days: int
    start: date
    items_per_category: int
    reviews: bool
    id_width: int


def _day_strings(start: date, n: int) -> list[str]:
    return [(start + timedelta(days=d)).isoformat() for d in range(n)]


@functools.lru_cache(maxsize=1)
def _time_of_day() -> tuple[str, ...]:
    """``HH:MM:SS`` for every second of a day: a lookup is much cheaper than formatting."""
    return tuple(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(_DAY_S))


@functools.lru_cache(maxsize=8)
def _weekend_factors(start: date, n: int) -> tuple[float, ...]:
    return tuple(_WEEKEND_BOOST if (start + timedelta(days=d)).weekday() >= 5 else 1.0
                 for d in range(n))


class _Sink:
    """Lines of one chunk, bucketed by UTC day index, appended to their part files when many."""

    def __init__(self, root: Path | None, kind: str, chunk: int, day_str: list[str]):
        self.root, self.kind, self.chunk, self.day_str = root, kind, chunk, day_str
        self.bufs: list[list[str]] = [[] for _ in day_str]  # callers append to bufs[day]
        self.by_day = [0] * len(day_str)  # lines already flushed, by day

    @property
    def count(self) -> int:
        """Lines taken so far, flushed or not."""
        return sum(self.by_day) + sum(len(b) for b in self.bufs)

    def maybe_flush(self) -> None:
        if sum(len(b) for b in self.bufs) >= _FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        for day, lines in enumerate(self.bufs):
            if not lines:
                continue
            self.by_day[day] += len(lines)
            if self.root is not None:
                folder = self.root / self.kind / f"dt={self.day_str[day]}"
                folder.mkdir(parents=True, exist_ok=True)
                # Append: this chunk alone owns the file, and generate() cleared the folder first.
                with open(folder / f"part-{self.chunk:05d}.jsonl", "a", encoding="utf-8",
                          newline="\n") as fh:
                    fh.writelines(lines)
            lines.clear()


@functools.lru_cache(maxsize=16_384)
def _item_cum_weights(seed: int, items_per_category: int, cat: int, sens: float,
                      fav_brand: str | None) -> list[float]:
    """Cumulative item choice weights in ``cat``: popularity x price^-sens, x3 for the fav brand.

    Shared by all users with the same (rounded) sensitivity and favourite brand, hence cached.
    """
    weights = []
    for it in _catalog(seed, items_per_category)[cat]:
        w = it.popularity * math.exp(-sens * it.log_rel_price)
        weights.append(w * 3.0 if fav_brand is not None and it.brand == fav_brand else w)
    return list(itertools.accumulate(weights))


class _UserSimulation:
    """One user's whole period, simulated into the sinks session after session.

    With ``ctx.seed`` the user index alone seeds the random stream, so a user's lines do not
    depend on which chunk or process simulates them. Every random draw happens in a fixed order,
    which is what keeps the output byte-identical for the same arguments.

    State carried from session to session: ``pending`` (carted, not bought; abandoned after five
    days), ``due`` (bought consumables running out) and the event, session and review counters;
    within a session: ``sid`` and ``last`` (the time of its latest event).
    """

    # Slots: attribute reads in the per-event methods cost less (the simulation's hot path).
    __slots__ = ("ctx", "catalog", "day_str", "ev_bufs", "rev_bufs", "counts", "r", "rnd",
                 "expo", "gauss", "tod", "period_s", "u", "uid", "prop", "sens", "n_cat",
                 "mission_cw", "mission_total", "sens_q", "user_cw", "weekend", "p_cart",
                 "p_checkout", "qty_extra", "geo_views", "zh", "boost_max", "n_ev", "n_sess",
                 "n_rev", "pending", "pending_since", "due", "sid", "last", "first")

    def __init__(self, ctx: _Context, idx: int, catalog: tuple[tuple[_Item, ...], ...],
                 day_str: list[str], events: _Sink, reviews: _Sink, counts: dict[str, int]):
        """Draw the user's traits and derive the per-user constants of the simulation.

        Args:
            ctx: generation parameters.
            idx: user index; with ``ctx.seed`` it alone seeds this user's random stream.
            catalog: items per category.
            day_str: ISO date of every day index of the period.
            events: sink for event lines.
            reviews: sink for review lines.
            counts: per-type counters, updated in place.
        """
        self.ctx, self.catalog, self.day_str = ctx, catalog, day_str
        self.ev_bufs, self.rev_bufs, self.counts = events.bufs, reviews.bufs, counts
        self.r = random.Random(f"{ctx.seed}-user-{idx}")
        self.rnd, self.expo, self.gauss = self.r.random, self.r.expovariate, self.r.gauss
        self.tod = _time_of_day()
        self.period_s = ctx.days * _DAY_S
        self.u = u = _draw_user(self.r, idx, ctx.id_width, self.period_s)
        self.uid = u.user_id
        self.prop, self.sens = u.propensity, u.price_sensitivity
        self.n_cat = len(_CATEGORIES)
        self.mission_cw = list(itertools.accumulate(0.9 * p + 0.1 / self.n_cat for p in u.prefs))
        self.mission_total = self.mission_cw[-1]
        self.sens_q = round(self.sens, 1)
        self.user_cw: dict[int, list[float]] = {}  # item choice weights by category
        self.weekend = _weekend_factors(ctx.start, ctx.days)
        self.p_cart = 0.02 + 0.22 * self.prop
        self.p_checkout = 0.15 + 0.75 * self.prop
        self.qty_extra = 0.35 if u.segment == "loyal_high_spender" else 0.15
        self.geo_views = math.log(1.0 - 1.0 / u.views_mean)
        self.zh = u.language == "zh"
        self.boost_max = 1.0 + 2.0 * self.prop
        self.n_ev = self.n_sess = self.n_rev = 0
        self.pending: list[tuple[_Item, int]] = []
        self.pending_since = 0
        self.due: list[tuple[float, _Item, int]] = []  # consumables to buy again: (due, item, qty)
        self.sid = ""
        self.last = 0
        self.first = True

    def run(self) -> _User:
        """Simulate every session of the period.

        Returns:
            The user's drawn traits.
        """
        t = self.u.start_s
        while True:
            t = self._next_session_start(t)
            if t >= self.period_s:
                break
            self._session(int(t))
            t = float(self.last + _SESSION_GAP_S + 1)
        self.counts["sessions"] += self.n_sess
        return self.u

    # -- between sessions --
    def _first_due(self) -> float:
        return min(d for d, _, _ in self.due) if self.due else math.inf

    def _next_session_start(self, t: float) -> float:
        """The next session start after ``t``, ``>= period_s`` when the period ends first.

        Thinning of a Poisson process whose rate is the user's activity, raised while a cart is
        pending or a consumable is due, times the hour-of-day, weekday and churn factors (<= 1).
        """
        u, rnd, expo, period_s, weekend = self.u, self.rnd, self.expo, self.period_s, self.weekend
        pending, boost_max = self.pending, self.boost_max
        may_boost = bool(pending or self.due)
        lam_max = u.activity * (boost_max if may_boost else 1.0) / _DAY_S
        first_due = self._first_due()
        while True:
            t += expo(lam_max)
            if t >= period_s:
                return t
            day = int(t // _DAY_S)
            accept = _HOURLY[int(t % _DAY_S) // 3600] * weekend[day] / _WEEKEND_BOOST
            if u.churn_tau_s is not None:
                accept *= math.exp(-t / u.churn_tau_s)
            if may_boost and not pending and t < first_due:
                accept /= boost_max
            if rnd() < accept:
                return t

    # -- one session --
    def _session(self, now: int) -> None:
        """One session starting at ``now``: rebuy what has run out, maybe check out a pending
        cart, maybe search, browse, then buy the cart or leave it pending."""
        self.sid = f"{self.uid}-s{self.n_sess}"
        self.n_sess += 1
        self.last, self.first = now, True
        if self.pending and now - self.pending_since > _PENDING_TTL_S:
            self.pending = []  # abandoned cart
        # A consumable that has run out is usually bought again, first thing.
        if self.due and self._first_due() <= now:
            self._rebuy(now)
        # A returning user with a pending cart often goes straight to checkout.
        if self.pending and self.rnd() < 0.3 + 0.6 * self.prop:
            self._checkout_pending()
        mission = self._pick_category()
        brand_q = self._search(mission)
        cart = self._browse(mission, brand_q)
        if cart and self.last < self.period_s:
            if self.rnd() < self.p_checkout * 0.8:
                self.last = self._purchase(self._step(), self.pending + cart)
                self.pending = []
            else:
                self.pending = (self.pending + cart)[-5:]
                self.pending_since = self.last

    def _step(self) -> int:
        """The time of the session's next event (its start for the first one), kept in ``last``."""
        if self.first:
            self.first = False
            return self.last
        self.last = last = self.last + 1 + min(_MAX_INNER_GAP_S - 1,
                                               int(math.exp(self.gauss(3.6, 1.0))))
        return last

    def _rebuy(self, now: int) -> None:
        """View, cart and buy again the consumables due by ``now`` (each with some chance)."""
        ready = [(it, q) for d, it, q in self.due if d <= now]
        self.due = [x for x in self.due if x[0] > now]
        rebuy = []
        for it, q in ready:
            if self.rnd() < 0.45 + 0.5 * self.prop and self._step() < self.period_s:
                self._emit(self.last, "view", it.json_fragment)
                if self._step() < self.period_s:
                    self._emit(self.last, "cart", it.json_fragment, str(q))
                    rebuy.append((it, q))
        if rebuy:
            self.last = self._purchase(self.last, rebuy)

    def _checkout_pending(self) -> None:
        """View the pending cart's items again, then maybe buy them."""
        for it, _q in self.pending:
            if self._step() >= self.period_s:
                break
            self._emit(self.last, "view", it.json_fragment)
        if self.last < self.period_s and self.rnd() < self.p_checkout:
            self.last = self._purchase(self.last, self.pending)
            self.pending = []

    def _pick_category(self) -> int:
        """A category by the user's preferences (90%) or at random (10%)."""
        return bisect(self.mission_cw, self.rnd() * self.mission_total, 0, self.n_cat - 1)

    def _search(self, mission: int) -> str | None:
        """Maybe open the session with a search for the mission's product, a brand or a bargain.

        Returns:
            The brand searched for, or None.
        """
        rnd, zh, r = self.rnd, self.zh, self.r
        if not (rnd() < self.u.search_p and self._step() < self.period_s):
            return None
        brand_q = None
        spec = _CATEGORIES[mission]
        noun = r.choice(spec.nouns_zh if zh else spec.nouns_en)
        x = rnd()
        if x < 0.35:
            brand_q = self.u.fav_brand.get(mission) or r.choice(spec.brands)
            q = f"{brand_q}{noun}" if zh else f"{brand_q} {noun}"
        elif x < 0.35 + 0.3 * min(1.0, max(0.0, self.sens)):
            q = f"便宜{noun}" if zh else r.choice(("cheap ", "discount ", "")) + noun + (
                " sale" if rnd() < 0.3 else "")
        else:
            q = noun if rnd() < 0.6 else (f"{noun}推荐" if zh else f"best {noun}")
        self._emit(self.last, "search",
                   f'"item_id":null,"category":"{spec.name}","brand":{json.dumps(brand_q)},'
                   f'"price":null', query=json.dumps(q, ensure_ascii=False))
        return brand_q

    def _pick_item(self, cat: int) -> _Item:
        """An item of ``cat`` by popularity, price sensitivity and brand loyalty."""
        cw = self.user_cw.get(cat)
        if cw is None:
            cw = self.user_cw[cat] = _item_cum_weights(
                self.ctx.seed, self.ctx.items_per_category, cat, self.sens_q,
                self.u.fav_brand.get(cat))
        return self.catalog[cat][bisect(cw, self.rnd() * cw[-1], 0, len(cw) - 1)]

    def _quantity(self, cat: int) -> int:
        """How many of an item go into the cart: more for consumables and big spenders."""
        rnd, q = self.rnd, 1
        if _CATEGORIES[cat].consumable or rnd() < self.qty_extra:
            while rnd() < 0.35 and q < 6:
                q += 1
        return q

    def _browse(self, mission: int, brand_q: str | None) -> list[tuple[_Item, int]]:
        """View items, mostly of the mission category, with the odd fav, cart and removal.

        Returns:
            The items carted and not removed, with their quantities.
        """
        rnd, step, emit, period_s = self.rnd, self._step, self._emit, self.period_s
        cart: list[tuple[_Item, int]] = []
        n_views = 1 + int(math.log(1.0 - rnd()) / self.geo_views)
        cat = mission
        for _ in range(n_views):
            if rnd() < 0.12:
                cat = self._pick_category()
            it = self._pick_item(cat)
            if brand_q is not None and it.brand != brand_q and rnd() < 0.5:
                continue  # searching for a brand, the user skips other brands' items
            if step() >= period_s:
                break
            emit(self.last, "view", it.json_fragment)
            if rnd() < 0.04:
                if step() >= period_s:
                    break
                emit(self.last, "fav", it.json_fragment)
            # Bargain hunters rarely cart items above the category's price level.
            pc = self.p_cart * min(1.5, math.exp(-0.5 * max(0.0, self.sens) * it.log_rel_price))
            if rnd() < pc:
                q = self._quantity(cat)
                if step() >= period_s:
                    break
                emit(self.last, "cart", it.json_fragment, str(q))
                if rnd() < 0.1:
                    if step() >= period_s:
                        break
                    emit(self.last, "remove_from_cart", it.json_fragment)
                else:
                    cart.append((it, q))
        return cart

    # -- what gets written --
    def _emit(self, t: int, etype: str, fragment: str, qty: str = "null",
              query: str = "null") -> None:
        """Append one event line of this session at time ``t``."""
        uid = self.uid
        day, sod = divmod(t, _DAY_S)
        self.ev_bufs[day].append(
            f'{{"event_id":"{uid}-e{self.n_ev}","user_id":"{uid}","session_id":"{self.sid}",'
            f'"event_type":"{etype}",{fragment},"quantity":{qty},"search_query":{query},'
            f'"timestamp":"{self.day_str[day]}T{self.tod[sod]}+00:00"}}\n')
        self.counts[etype] += 1
        self.n_ev += 1

    def _purchase(self, t: int, cart: list[tuple[_Item, int]]) -> int:
        """Buy the cart's items one after another from ``t``; schedules consumables to run out
        and maybe a review of each.

        Returns:
            The time of the last purchase (``>= period_s`` if the period ended first).
        """
        u, rnd, period_s = self.u, self.rnd, self.period_s
        for it, q in cart:
            t += 1 + min(_MAX_INNER_GAP_S - 1, int(math.exp(self.gauss(2.5, 0.8))))
            if t >= period_s:
                return t
            self._emit(t, "purchase", it.json_fragment, str(q))
            if _CATEGORIES[it.cat].consumable:
                self.due.append((t + u.replenish_s * self.r.uniform(0.85, 1.15), it, q))
            if self.ctx.reviews and rnd() < u.review_propensity:
                self._review(t, it)
        return t

    def _review(self, t: int, it: _Item) -> None:
        """A review of ``it`` bought at ``t``, 1 to about 10 days later, unless after the period."""
        u, r = self.u, self.r
        rt = t + int((1.0 + self.expo(1 / 2.5)) * _DAY_S)
        if rt >= self.period_s:
            return
        rating = _rating(r, it.quality, u.mood)
        title, text = _review_text(r, rating, u.language, it.cat, it.brand)
        day, sod = divmod(rt, _DAY_S)
        self.rev_bufs[day].append(json.dumps({
            "review_id": f"{self.uid}-r{self.n_rev}", "user_id": self.uid, "item_id": it.item_id,
            "category": CATEGORY_NAMES[it.cat], "rating": rating,
            "label": 1 if rating >= 4 else (0 if rating <= 2 else None),
            "title": title, "text": text, "language": u.language,
            "timestamp": f"{self.day_str[day]}T{self.tod[sod]}+00:00",
        }, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.counts[f"reviews_{u.language}"] += 1
        self.counts[f"rating_{rating}"] += 1
        self.n_rev += 1


def _new_counts() -> dict[str, int]:
    keys = list(EVENT_TYPES) + ["sessions", "reviews_en", "reviews_zh"] + [
        f"rating_{s}" for s in range(1, 6)] + [f"segment_{s}" for s in SEGMENTS]
    return dict.fromkeys(keys, 0)


def _run_chunk(task: tuple[_Context, int, int, int, str | None]) -> dict[str, int]:
    """Simulate users ``[lo, hi)`` of chunk ``chunk`` and write their part files.

    Args:
        task: (context, chunk number, first user index, end user index, output folder or None
            to only count).

    Returns:
        Counts by event type, sessions, reviews by language and rating, users by segment.
    """
    ctx, chunk, lo, hi, out = task
    root = Path(out) if out is not None else None
    catalog = _catalog(ctx.seed, ctx.items_per_category)
    day_str = _day_strings(ctx.start, ctx.days)
    events = _Sink(root, "events", chunk, day_str)
    reviews = _Sink(root, "reviews", chunk, day_str)
    counts = _new_counts()
    truth = []
    for idx in range(lo, hi):
        u = _UserSimulation(ctx, idx, catalog, day_str, events, reviews, counts).run()
        counts[f"segment_{u.segment}"] += 1
        if root is not None:
            truth.append(_truth_line(u))
        events.maybe_flush()
        reviews.maybe_flush()
    events.flush()
    reviews.flush()
    for day, n in enumerate(events.by_day):
        counts[f"day_{day}"] = n
    if root is not None:
        parts = root / "_truth" / "_users_parts"
        parts.mkdir(parents=True, exist_ok=True)
        (parts / f"part-{chunk:05d}.jsonl").write_text("".join(truth), encoding="utf-8")
    return counts


# ---- public API ---------------------------------------------------------------------------------
def _parse_start(start_date: date | str) -> date:
    if isinstance(start_date, datetime):
        return start_date.date()
    if isinstance(start_date, date):
        return start_date
    try:
        return date.fromisoformat(str(start_date))
    except ValueError:
        raise ValueError(f"start_date must be YYYY-MM-DD, got {start_date!r}") from None


def _users_for_target(ctx: _Context, events_target: int) -> int:
    """Users whose simulated events total about ``events_target``.

    The first users are simulated (without writing) until the target is reached or ``_PILOT_USERS``
    have been counted; beyond that the count is extrapolated from the pilot's mean. Users are a
    deterministic function of their index, so the pilot users are exactly the first real users.

    Args:
        ctx: generation parameters (days, seed, ... as the real run will use).
        events_target: wanted total number of events.

    Returns:
        The number of users, at least 1.
    """
    catalog = _catalog(ctx.seed, ctx.items_per_category)
    day_str = _day_strings(ctx.start, ctx.days)
    events = _Sink(None, "events", 0, day_str)
    reviews = _Sink(None, "reviews", 0, day_str)
    counts = _new_counts()
    total = 0
    for idx in range(_PILOT_USERS):
        _UserSimulation(ctx, idx, catalog, day_str, events, reviews, counts).run()
        events.flush()
        reviews.flush()
        # Stop at whichever user count lands closer to the target.
        if events.count >= events_target:
            over = events.count - events_target
            under = events_target - total
            return idx + 1 if over <= under or idx == 0 else idx
        total = events.count
    mean = max(total / _PILOT_USERS, 1e-9)
    return _PILOT_USERS + max(0, round((events_target - total) / mean))


def configured(cfg) -> dict:
    """``users``, ``days``, ``start_date`` and ``seed`` of the config's ``generator`` section
    (conf/defaults.yaml), for :func:`generate`; the one place their fallbacks live."""
    g = cfg.get("generator") or {}
    return {"users": int(g.get("users", 200)), "days": int(g.get("days", 28)),
            "start_date": str(g.get("start_date", "2026-11-01")), "seed": int(g.get("seed", 7))}


def generate(out_dir: str | Path, users: int = 200, days: int = 14,
             start_date: date | str = "2026-11-01", seed: int = 7,
             events_target: int | None = None, reviews: bool = True, workers: int = 1, *,
             chunk_users: int = CHUNK_USERS, items_per_category: int = 50) -> dict:
    """Write synthetic events, reviews and ground truth under ``out_dir``; see the module docstring.

    The folders ``events``, ``reviews`` and ``_truth`` under ``out_dir`` are replaced, so a rerun
    with the same arguments leaves byte-identical files. Users are simulated a chunk at a time
    (memory stays bounded by ``chunk_users``), in a spawn process pool when ``workers > 1``; as with
    any spawn pool, a script that calls this must do so under ``if __name__ == "__main__":``.

    Args:
        out_dir: output folder (created if missing).
        users: number of users; ignored when ``events_target`` is given.
        days: length of the period in days, starting at ``start_date`` 00:00 UTC.
        start_date: first day, a ``date`` or ``YYYY-MM-DD``.
        seed: seed of every random choice; different seeds give different data.
        events_target: if given, the number of users is chosen so the events total comes out
            close to this (within a few percent above a few thousand events).
        reviews: whether to write reviews.
        workers: processes to simulate chunks in parallel; does not change the output.
        chunk_users: users per chunk (one part file per chunk and day); part of the output layout.
        items_per_category: catalog size per category (20 categories).

    Returns:
        The summary also written to ``_truth/summary.json``: counts of users, sessions, events
        (total, by type, by day), reviews (total, by language, by rating), users by segment, the
        period and the parameters that shape the output.

    Raises:
        ValueError: on a non-positive size, seed not an int, or a malformed ``start_date``.
    """
    for name, value in (("users", users), ("days", days), ("workers", workers),
                        ("chunk_users", chunk_users), ("items_per_category", items_per_category)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if events_target is not None and (isinstance(events_target, bool)
                                      or not isinstance(events_target, int) or events_target < 1):
        raise ValueError(f"events_target must be a positive int or None, got {events_target!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    start = _parse_start(start_date)
    began = time.perf_counter()
    ctx = _Context(seed=seed, days=days, start=start, items_per_category=items_per_category,
                   reviews=bool(reviews), id_width=6)
    if events_target is not None:
        users = _users_for_target(ctx, events_target)
        log.info("events_target=%d -> %d users", events_target, users)
    ctx = _Context(seed=seed, days=days, start=start, items_per_category=items_per_category,
                   reviews=bool(reviews), id_width=max(6, len(str(users - 1))))

    out = Path(out_dir)
    for sub in _OWNED_DIRS:
        if (out / sub).exists():
            log.info("replacing %s", out / sub)
            shutil.rmtree(out / sub)
    (out / "_truth").mkdir(parents=True, exist_ok=True)

    tasks = [(ctx, c, lo, min(lo + chunk_users, users), str(out))
             for c, lo in enumerate(range(0, users, chunk_users))]
    n_proc = min(workers, len(tasks))
    if n_proc <= 1:
        results = [_run_chunk(t) for t in tasks]
    else:
        # spawn, not fork: safe inside a process that already runs threads (a JVM, a pool).
        with multiprocessing.get_context("spawn").Pool(n_proc) as pool:
            results = list(pool.imap(_run_chunk, tasks, chunksize=1))
    counts = _new_counts()
    for res in results:
        for k, v in res.items():
            counts[k] = counts.get(k, 0) + v

    parts = out / "_truth" / "_users_parts"
    with open(out / "_truth" / "users.jsonl", "wb") as dst:
        for c in range(len(tasks)):
            with open(parts / f"part-{c:05d}.jsonl", "rb") as src:
                shutil.copyfileobj(src, dst)
    shutil.rmtree(parts)
    catalog = _catalog(seed, items_per_category)
    with open(out / "_truth" / "items.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for items in catalog:
            for it in items:
                fh.write(json.dumps({
                    "item_id": it.item_id, "category": CATEGORY_NAMES[it.cat], "brand": it.brand,
                    "price": it.price, "quality": it.quality,
                    "popularity": round(it.popularity, 4)}, separators=(",", ":")) + "\n")

    events_by_day = {d: counts.get(f"day_{i}", 0)
                     for i, d in enumerate(_day_strings(start, days))}
    summary = {
        "seed": seed,
        "start_date": start.isoformat(),
        "end_date": (start + timedelta(days=days - 1)).isoformat(),
        "days": days,
        "users": users,
        "chunk_users": chunk_users,
        "chunks": len(tasks),
        "categories": len(_CATEGORIES),
        "items": len(_CATEGORIES) * items_per_category,
        "sessions": counts["sessions"],
        "events": sum(counts[t] for t in EVENT_TYPES),
        "events_by_type": {t: counts[t] for t in EVENT_TYPES},
        "events_by_day": events_by_day,
        "reviews": counts["reviews_en"] + counts["reviews_zh"],
        "reviews_by_language": {lang: counts[f"reviews_{lang}"] for lang in LANGUAGES},
        "reviews_by_rating": {str(s): counts[f"rating_{s}"] for s in range(1, 6)},
        "users_by_segment": {s: counts[f"segment_{s}"] for s in SEGMENTS},
    }
    (out / "_truth" / "summary.json").write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    elapsed = time.perf_counter() - began
    log.info("wrote %d events, %d reviews for %d users in %.1f s (%.0f events/s, %d workers)",
             summary["events"], summary["reviews"], users, elapsed,
             summary["events"] / max(elapsed, 1e-9), n_proc)
    return summary



# ---- field faults: what real feeds also deliver -----------------------------------------------
FAULTS_FILE = "part-faults.jsonl"


def plant_faults(out_dir: str | Path, seed: int = 7) -> dict[str, int]:
    """Add to a generated raw folder what real feeds deliver besides clean records, in a file
    ``part-faults.jsonl`` beside each day's events (and reviews) from the second day on:

    * a late event: an event of the day before (a copy of one of its users' events, one second
      later, under a new id) arriving in this day's file;
    * a repeat: one of the day before's lines again, byte for byte;
    * a conflicting duplicate: one of the day before's event ids with other content;
    * bad records: a line that is not JSON, a missing user id, an unknown event type and a
      negative price;
    * reviews in Chinese and English (one positive and one negative each), one of them repeated.

    Returns:
        What was planted, by kind.
    """
    rnd = random.Random(seed)
    root = Path(out_dir)
    days = sorted(p for p in (root / "events").glob("dt=*") if p.is_dir())
    counts = collections.Counter()
    for before, day in zip(days, days[1:]):
        previous = [line for f in sorted(before.glob("part-0*.jsonl"))
                    for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not previous:
            continue
        date_str = day.name.split("=", 1)[1]
        late = json.loads(rnd.choice(previous))
        late["event_id"] = f"{late['event_id']}-late"
        late["timestamp"] = (datetime.fromisoformat(late["timestamp"])
                             + timedelta(seconds=1)).isoformat()
        conflict = json.loads(rnd.choice(previous))
        conflict["price"] = round(float(conflict.get("price") or 1.0) + 1.0, 2)
        good = json.loads(rnd.choice(previous))
        at = f"{date_str}T12:00:00+00:00"
        lines = [json.dumps(late), rnd.choice(previous), json.dumps(conflict),
                 '{"event_id": "broken", "user_id": ',
                 json.dumps({**good, "event_id": f"{date_str}-no-user", "user_id": None,
                             "timestamp": at}),
                 json.dumps({**good, "event_id": f"{date_str}-odd-type", "event_type": "teleport",
                             "timestamp": at}),
                 json.dumps({**good, "event_id": f"{date_str}-neg-price", "price": -3.5,
                             "timestamp": at})]
        (day / FAULTS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts.update(late=1, repeat=1, conflicting_duplicate=1, bad=4)

        user, item = good["user_id"], good.get("item_id")
        reviews = [
            {"review_id": f"{date_str}-zh-pos", "user_id": user, "item_id": item, "rating": 5,
             "title": "非常满意", "text": "质量很好，物流很快，下次还会再买", "language": "zh",
             "timestamp": at},
            {"review_id": f"{date_str}-zh-neg", "user_id": user, "item_id": item, "rating": 1,
             "title": "很失望", "text": "做工很差，用了两天就坏了，不推荐", "language": "zh",
             "timestamp": at},
            {"review_id": f"{date_str}-en-pos", "user_id": user, "item_id": item, "rating": 5,
             "title": "Great buy", "text": "Works perfectly, fast delivery, would buy again",
             "language": "en", "timestamp": at},
            {"review_id": f"{date_str}-en-neg", "user_id": user, "item_id": item, "rating": 1,
             "title": "Broke fast", "text": "Cheap plastic, stopped working after two days",
             "language": "en", "timestamp": at},
        ]
        folder = root / "reviews" / day.name
        folder.mkdir(parents=True, exist_ok=True)
        review_lines = [json.dumps(r, ensure_ascii=False) for r in reviews]
        (folder / FAULTS_FILE).write_text("\n".join(review_lines + review_lines[:1]) + "\n",
                                          encoding="utf-8")
        counts.update(reviews=4, review_repeat=1)
    return dict(counts)
