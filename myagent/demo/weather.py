"""Demo weather tools with built-in data: current weather and basic facts for eight cities,
answered in the language the city was asked in (北京 -> Chinese, Beijing -> English).

These are demo tools, not a weather service: the data is built in, so no weather API (and no
key or network) is needed and every answer is reproducible. That is what lets
``examples/ws_weather_agent.py`` serve after a plain ``pip install .`` and lets the offline
model answer with them. The myagent-ws-weather plugin (plugins/weather) serves the same
tools as its ``weather-assistant`` agent.
"""

from dataclasses import dataclass

from myagent.tool.base_tool import BaseTool, ToolResult


@dataclass(frozen=True)
class City:
    """One city's facts in both languages, so a tool can answer in the asker's language."""

    zh: str
    en: str
    temperature_c: int
    condition_zh: str
    condition_en: str
    humidity: int
    wind_zh: str
    wind_en: str
    population_zh: str
    population_en: str
    region_zh: str
    region_en: str
    about_zh: str
    about_en: str


CITIES = [
    City("北京", "Beijing", 25, "晴", "sunny", 40, "北风 2 级", "north wind 8 km/h",
         "约 2189 万", "about 21.9 million", "中国 · 北京市（直辖市）",
         "Beijing Municipality, China",
         "中国首都，拥有故宫、长城等名胜的千年古都。",
         "China's capital, an ancient city of the Forbidden City and the Great Wall."),
    City("上海", "Shanghai", 28, "多云", "cloudy", 65, "东南风 3 级", "southeast wind 14 km/h",
         "约 2487 万", "about 24.9 million", "中国 · 上海市（直辖市）",
         "Shanghai Municipality, China",
         "中国最大的经济中心和国际港口城市，外滩与陆家嘴隔江相望。",
         "China's largest economic hub and port, where the Bund faces Lujiazui."),
    City("广州", "Guangzhou", 31, "雷阵雨", "thunderstorms", 80, "南风 2 级", "south wind 9 km/h",
         "约 1883 万", "about 18.8 million", "中国 · 广东省（省会）", "Guangdong Province, China",
         "华南的商贸中心，以广交会和粤菜闻名。",
         "South China's trading center, known for the Canton Fair and Cantonese food."),
    City("深圳", "Shenzhen", 30, "阵雨", "showers", 78, "东风 3 级", "east wind 13 km/h",
         "约 1779 万", "about 17.8 million", "中国 · 广东省", "Guangdong Province, China",
         "从渔村成长起来的科技创新之城，毗邻香港。",
         "A fishing village turned tech-innovation city, next to Hong Kong."),
    City("伦敦", "London", 14, "小雨", "light rain", 82, "西南风 3 级", "southwest wind 18 km/h",
         "约 890 万", "about 8.9 million", "英国 · 英格兰", "England, United Kingdom",
         "英国首都，泰晤士河畔的金融与文化中心。",
         "The UK's capital, a finance and culture center on the Thames."),
    City("巴黎", "Paris", 19, "晴间多云", "partly cloudy", 60, "西风 2 级", "west wind 11 km/h",
         "约 210 万", "about 2.1 million", "法国 · 法兰西岛大区", "Île-de-France, France",
         "法国首都，以埃菲尔铁塔和卢浮宫闻名的艺术之都。",
         "France's capital, the city of art of the Eiffel Tower and the Louvre."),
    City("纽约", "New York", 22, "晴", "sunny", 55, "西北风 3 级", "northwest wind 16 km/h",
         "约 830 万", "about 8.3 million", "美国 · 纽约州", "New York State, United States",
         "美国最大城市，联合国总部与华尔街所在地。",
         "The largest US city, home of the United Nations and Wall Street."),
    City("东京", "Tokyo", 24, "多云", "cloudy", 70, "南风 3 级", "south wind 12 km/h",
         "约 1400 万", "about 14 million", "日本 · 东京都", "Tokyo Metropolis, Japan",
         "日本首都，传统寺社与摩天大楼并存的超大城市。",
         "Japan's capital, a megacity of old shrines and skyscrapers."),
]  # fmt: skip

ALIASES = {"nyc": "纽约", "new york city": "纽约", "peking": "北京", "canton": "广州"}
_BY_NAME = {key: city for city in CITIES for key in (city.zh, city.en.lower())}
_BY_NAME.update({alias: _BY_NAME[target] for alias, target in ALIASES.items()})

CITY_PARAMETER = {
    "type": "string",
    "description": "City name in Chinese or English, e.g. 北京 or Beijing / 城市名",
    "examples": [c.zh for c in CITIES] + [c.en for c in CITIES],
}


def find_city(name: str) -> City | None:
    """A known city by its Chinese or English name (any case, optional 市/city suffix)."""
    key = " ".join(name.strip().split()).lower()
    return _BY_NAME.get(key) or _BY_NAME.get(key.removesuffix("市").removesuffix(" city"))


def chinese(text: str) -> bool:
    """Whether to answer in Chinese: the city was named with CJK characters."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def unknown_city(name: str) -> ToolResult:
    """An error that lists the known cities, so the model (or person) can retry with one."""
    if chinese(name):
        known = "、".join(c.zh for c in CITIES)
        return ToolResult(error=f"没有城市“{name}”的数据。已知城市：{known}。")
    known = ", ".join(c.en for c in CITIES)
    return ToolResult(error=f"No data for the city {name!r}. Known cities: {known}.")


class GetWeatherTool(BaseTool):
    """Current weather for a known city."""

    name = "get_weather"
    description = (
        "Get the current weather in a city: temperature, condition, humidity and wind. "
        "查询城市天气：气温、天气状况、湿度、风力。"
    )
    parameters = {"type": "object", "properties": {"city": CITY_PARAMETER}, "required": ["city"]}

    async def execute(self, city: str) -> ToolResult:
        found = find_city(city)
        if found is None:
            return unknown_city(city)
        c = found
        if chinese(city):
            return ToolResult(
                output=f"{c.zh}：{c.condition_zh}，气温 {c.temperature_c}°C，"
                f"湿度 {c.humidity}%，{c.wind_zh}。"
            )
        return ToolResult(
            output=f"{c.en}: {c.condition_en}, {c.temperature_c}°C, "
            f"humidity {c.humidity}%, {c.wind_en}."
        )


class GetCityInfoTool(BaseTool):
    """Population, region and a one-line description of a known city."""

    name = "get_city_info"
    description = (
        "Get basic information about a city: population, province or country, and a "
        "one-line description. 查询城市基本信息：人口、所属省份或国家、简介。"
    )
    parameters = {"type": "object", "properties": {"city": CITY_PARAMETER}, "required": ["city"]}

    async def execute(self, city: str) -> ToolResult:
        found = find_city(city)
        if found is None:
            return unknown_city(city)
        c = found
        if chinese(city):
            return ToolResult(
                output=f"{c.zh}（{c.en}）：人口{c.population_zh}，位于{c.region_zh}。{c.about_zh}"
            )
        return ToolResult(
            output=f"{c.en} ({c.zh}): population {c.population_en}, in {c.region_en}. {c.about_en}"
        )


__all__ = ["CITIES", "City", "GetCityInfoTool", "GetWeatherTool", "find_city"]
