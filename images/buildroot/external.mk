include $(sort $(wildcard $(BR2_EXTERNAL_EDGECORE_PATH)/package/*/*.mk))
