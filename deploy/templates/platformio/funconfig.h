/* ch32v003fun settings for the die demo (env:ch32v003; see ch32fun.h for every option). */
#ifndef _FUNCONFIG_H
#define _FUNCONFIG_H

#define FUNCONF_USE_DEBUGPRINTF 0
#define FUNCONF_USE_UARTPRINTF 1   /* printf on USART1 TX (PD5), 115200 8N1: `pio device monitor` */
#define FUNCONF_UART_PRINTF_BAUD 115200
#define FUNCONF_SYSTICK_USE_HCLK 1 /* SysTick->CNT counts core cycles (48 MHz) */

#endif
