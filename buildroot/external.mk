include $(sort $(wildcard $(BR2_EXTERNAL_CTRACK_PATH)/package/*/*.mk))
